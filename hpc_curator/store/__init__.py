"""The run directory and what is kept in it: paths, journals and their reading, the acceptance
rule, segments, merged outputs, the manifest, revisions, atomic and link-free file writing."""
