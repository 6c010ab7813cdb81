//! The control plane: where nodes and rooms are registered. One trait, several backends.
