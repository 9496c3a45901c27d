//! Image preprocessing (stub).
