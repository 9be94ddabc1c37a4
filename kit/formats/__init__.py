"""Wire formats (docs/FORMAT.md): each object is a signed envelope around a
canonical msgpack body. Decoders here are strict and bounded; they do no I/O."""
