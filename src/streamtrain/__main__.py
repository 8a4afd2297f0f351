from streamtrain.cli.main import entry

entry()
