"""Input and output of structures and calculations: readers, records, ingest, the safe decoder, DFT in and out."""
