//! The pure forwarding core: decisions on the packet path, no I/O, time passed in.
