"""Label Studio in the store's terms: label configs, regions ↔ boxes, tasks' weak labels and human boxes,
task media, and bulk push/pull of tasks. The ML backend (`genpromp_annotate_backend`) and the CLI use it."""
