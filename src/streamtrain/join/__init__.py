"""Labels that arrive later: feature and label events joined by id in event time.

``events`` decodes them, ``merge`` orders a task's input partitions by record timestamp,
``state`` keeps what waits (checkpointed with the model), ``step`` predicts, joins, expires.
"""
