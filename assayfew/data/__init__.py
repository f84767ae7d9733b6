"""Assay data: the long-format table, corpus readers and prepared (featurized) corpora."""

from assayfew.data.readers import (
    PQSAR_FILES,
    read_corpus,
    read_dir,
    read_fsmol,
    read_long_csv,
    read_pqsar,
    read_smiles_csv,
)
from assayfew.data.table import TABLE_COLUMNS, DataFormatError, Report

__all__ = [
    "PQSAR_FILES",
    "TABLE_COLUMNS",
    "DataFormatError",
    "Report",
    "read_corpus",
    "read_dir",
    "read_fsmol",
    "read_long_csv",
    "read_pqsar",
    "read_smiles_csv",
]
