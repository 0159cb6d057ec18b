"""kbnn.converters: export kbnn models to TFLite flatbuffers with LCE bitpacked ops."""

__all__: list[str] = []
