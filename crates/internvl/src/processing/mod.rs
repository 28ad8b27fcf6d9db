//! Image decoding, PIL-exact resizing, normalisation and tiling.
//!
//! InternVL checkpoints were trained on pixels produced by Pillow, torchvision and
//! transformers; small differences in decoding or resampling shift every feature. This
//! module therefore reproduces that Python pipeline bit for bit:
//!
//! * [`image`]: decode PNG, JPEG, WebP, GIF and BMP to RGB like
//!   `Image.open(path).convert("RGB")`;
//! * [`resize`]: Pillow's fixed-point bicubic `Image.resize`;
//! * [`transforms`]: ToTensor/Normalize, transformers' `CLIPImageProcessor` and
//!   InternVL-Chat's dynamic tiling;
//! * [`templates`]: InternVL-Chat's conversation templates and `<image>` prompt expansion;
//! * [`tokenizer`]: the text tokenizers (SentencePiece and byte-level BPE).

pub mod image;
pub mod resize;
pub mod templates;
pub mod tokenizer;
pub mod transforms;

pub use self::image::{decode_rgb, load_rgb};
pub use resize::resize_bicubic;
