"""The aligned-face TFRecord data, by its three parts (one import for callers that use several):

- `tf_facetex.data.records`: the example format, atomic record files, the manifest, listing and counting files;
- `tf_facetex.data.preprocess`: the resumable sharded preprocessing run (scripts/preprocess.py);
- `tf_facetex.data.tfdata`: the tf.data pipeline (`make_dataset`).
"""
from tf_facetex.data.records import (  # noqa: F401 (re-exported)
    CROP_SIZE_DEFAULT, FORMAT_VERSION, MANIFEST_NAME, OptionalField, count_records, encode_example, example_payload,
    example_sha1, list_record_files, optional_fields_of, parse_example, read_manifest, read_records,
    serialize_payload, write_records_atomic)
from tf_facetex.data.preprocess import (  # noqa: F401 (re-exported)
    PreprocessConfig, WorkItem, format_summary, plan_work, run_preprocess, shard_name, shard_of,
    write_manifest)
from tf_facetex.data.tfdata import (  # noqa: F401 (re-exported)
    discover_optional_fields, make_dataset)
