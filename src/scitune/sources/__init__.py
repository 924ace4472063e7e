"""Data sources: converters of public datasets, SciFig (synthetic figures), OCR and LLM-written instruction data,
each turning its source into canonical records."""
