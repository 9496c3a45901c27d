//! uniffi bindings over `nnzip-core` (in progress).
