"""splitinfer's library, in layers (core < split | codecs | families < eval | transport < studies < cli): see docs/DESIGN.md."""
