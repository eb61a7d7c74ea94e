"""splitinfer's library, in layers (core < split | codecs | families < eval | transport | models < studies < cli): see docs/DESIGN.md."""
