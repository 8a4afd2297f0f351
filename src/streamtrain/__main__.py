from streamtrain.cli.main import main

raise SystemExit(main())
