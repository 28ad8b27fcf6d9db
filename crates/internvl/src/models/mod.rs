//! Network definitions and checkpoint loading.
