"""The lake: the only package that imports pyiceberg and pyarrow."""
