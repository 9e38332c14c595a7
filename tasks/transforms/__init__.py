"""Record transforms: parse, filter (JMESPath `where`), sample, project (`select`), add fields.

`transform_batch` is the one entry point: a pure, picklable function over a batch of
(offset, timestamp, value) rows, so a host may run it in a worker process per core.
"""

from tasks.transforms.batch import Plan, TransformOutput, transform_batch

__all__ = ["Plan", "TransformOutput", "transform_batch"]
