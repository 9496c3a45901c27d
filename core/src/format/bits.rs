//! STUB: the format helper writes this.
