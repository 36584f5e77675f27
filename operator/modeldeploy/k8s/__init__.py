"""The shell's side of the API: the client (the only code that talks to the API server), the table of child
kinds, and the reading of raw objects into the model."""
