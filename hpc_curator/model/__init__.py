"""What a pipeline is: components and pipelines, specs and factories, index selections and groups,
the code fingerprint, physicsnemo-curator filters."""
