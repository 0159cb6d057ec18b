"""kbnn.zoo: model builders with the keras.applications signature and a weights registry."""

__all__: list[str] = []
