//! Image decoding, PIL-exact resizing, normalisation and tiling.
