"""Built-in sources, filters and sinks."""

from hpc_curator.components.hdf5 import HDF5Sink as HDF5Sink
from hpc_curator.components.hdf5 import HDF5Source as HDF5Source
from hpc_curator.components.parquet import ParquetSink as ParquetSink
from hpc_curator.components.stats import FieldStats as FieldStats
from hpc_curator.components.stats import Moments as Moments
from hpc_curator.components.stats import read_fieldstats as read_fieldstats
from hpc_curator.components.synthetic import SyntheticSource as SyntheticSource
from hpc_curator.components.transforms import FailOn as FailOn
from hpc_curator.components.transforms import Sleep as Sleep
from hpc_curator.components.transforms import Smooth as Smooth
from hpc_curator.components.zarr_sink import ZarrSink as ZarrSink

__all__ = [
    "FailOn",
    "FieldStats",
    "HDF5Sink",
    "HDF5Source",
    "Moments",
    "ParquetSink",
    "Sleep",
    "Smooth",
    "SyntheticSource",
    "ZarrSink",
    "read_fieldstats",
]
