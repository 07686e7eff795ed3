"""`gpurent`: the command-line client of the gpurent API."""
