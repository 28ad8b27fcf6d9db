//! Reads a SentencePiece `ModelProto` (`tokenizer.model`) from the protobuf wire format.
//!
//! Hand-written rather than generated with `prost`: only 3 messages and about 20 scalar fields
//! are needed, and a 150-line reader avoids a build script and a `protoc` toolchain.
//! Unknown fields are skipped, as protobuf requires; defaults follow
//! `sentencepiece_model.proto` (proto2), e.g. `remove_extra_whitespaces` is true when absent.

/// One field as it appears on the wire.
enum WireValue<'a> {
    Varint(u64),
    Fixed64,
    Bytes(&'a [u8]),
    Fixed32(u32),
}

/// A cursor over one encoded message.
struct WireReader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> WireReader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self.buf.get(self.pos).ok_or("truncated varint")?;
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("varint longer than 10 bytes".into())
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(len)
            .filter(|&end| end <= self.buf.len());
        let end = end.ok_or_else(|| {
            format!(
                "field of {len} bytes at offset {} runs past the end ({} bytes)",
                self.pos,
                self.buf.len()
            )
        })?;
        let bytes = &self.buf[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    /// The next `(field number, value)`, or `None` at the end of the message.
    fn next_field(&mut self) -> Result<Option<(u64, WireValue<'a>)>, String> {
        if self.pos == self.buf.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let value = match key & 7 {
            0 => WireValue::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                WireValue::Fixed64
            }
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| "length overflow")?;
                WireValue::Bytes(self.take(len)?)
            }
            5 => {
                let bytes = self.take(4)?;
                WireValue::Fixed32(u32::from_le_bytes(bytes.try_into().expect("4 bytes")))
            }
            other => return Err(format!("unsupported wire type {other} (key {key})")),
        };
        Ok(Some((key >> 3, value)))
    }
}

fn as_varint(value: &WireValue, field: &str) -> Result<u64, String> {
    match value {
        WireValue::Varint(v) => Ok(*v),
        _ => Err(format!("field {field} is not a varint")),
    }
}

/// proto2 `int32`: negative values are sign-extended to 64 bits on the wire.
fn as_i32(value: &WireValue, field: &str) -> Result<i32, String> {
    Ok(as_varint(value, field)? as i64 as i32)
}

fn as_bool(value: &WireValue, field: &str) -> Result<bool, String> {
    Ok(as_varint(value, field)? != 0)
}

fn as_bytes<'a>(value: &WireValue<'a>, field: &str) -> Result<&'a [u8], String> {
    match value {
        WireValue::Bytes(b) => Ok(b),
        _ => Err(format!("field {field} is not length-delimited")),
    }
}

fn as_string(value: &WireValue, field: &str) -> Result<String, String> {
    let bytes = as_bytes(value, field)?;
    String::from_utf8(bytes.to_vec()).map_err(|_| format!("field {field} is not valid UTF-8"))
}

/// `ModelProto.SentencePiece`.
#[derive(Debug, Clone)]
pub(crate) struct RawPiece {
    pub piece: String,
    pub score: f32,
    /// `SentencePiece.Type` as stored (1 NORMAL … 6 BYTE).
    pub kind: i32,
}

/// The `TrainerSpec` fields that matter for encoding and decoding.
#[derive(Debug, Clone)]
pub(crate) struct TrainerSpec {
    pub model_type: i32,
    pub byte_fallback: bool,
    pub treat_whitespace_as_suffix: bool,
    pub unk_piece: String,
    pub bos_piece: String,
    pub eos_piece: String,
    pub pad_piece: String,
    pub unk_surface: Option<String>,
}

impl Default for TrainerSpec {
    fn default() -> Self {
        Self {
            model_type: 1, // UNIGRAM
            byte_fallback: false,
            treat_whitespace_as_suffix: false,
            unk_piece: "<unk>".into(),
            bos_piece: "<s>".into(),
            eos_piece: "</s>".into(),
            pad_piece: "<pad>".into(),
            unk_surface: None,
        }
    }
}

/// `NormalizerSpec` (also used for the denormaliser).
#[derive(Debug, Clone)]
pub(crate) struct NormalizerSpec {
    pub name: String,
    pub precompiled_charsmap_len: usize,
    pub add_dummy_prefix: bool,
    pub remove_extra_whitespaces: bool,
    pub escape_whitespaces: bool,
}

impl Default for NormalizerSpec {
    fn default() -> Self {
        Self {
            name: String::new(),
            precompiled_charsmap_len: 0,
            add_dummy_prefix: true,
            remove_extra_whitespaces: true,
            escape_whitespaces: true,
        }
    }
}

/// The decoded `ModelProto`.
#[derive(Debug, Clone, Default)]
pub(crate) struct ModelProto {
    pub pieces: Vec<RawPiece>,
    pub trainer: TrainerSpec,
    pub normalizer: NormalizerSpec,
    pub denormalizer: Option<NormalizerSpec>,
    /// Whether the specs were present: a file cut at a piece boundary still parses.
    pub has_trainer_spec: bool,
    pub has_normalizer_spec: bool,
}

fn parse_piece(bytes: &[u8]) -> Result<RawPiece, String> {
    let mut piece = RawPiece {
        piece: String::new(),
        score: 0.0,
        kind: 1,
    };
    let mut reader = WireReader::new(bytes);
    while let Some((field, value)) = reader.next_field()? {
        match (field, &value) {
            (1, _) => piece.piece = as_string(&value, "SentencePiece.piece")?,
            (2, WireValue::Fixed32(bits)) => piece.score = f32::from_bits(*bits),
            (2, _) => return Err("SentencePiece.score is not a float".into()),
            (3, _) => piece.kind = as_i32(&value, "SentencePiece.type")?,
            _ => {}
        }
    }
    Ok(piece)
}

fn parse_trainer(bytes: &[u8]) -> Result<TrainerSpec, String> {
    let mut spec = TrainerSpec::default();
    let mut reader = WireReader::new(bytes);
    while let Some((field, value)) = reader.next_field()? {
        match field {
            3 => spec.model_type = as_i32(&value, "TrainerSpec.model_type")?,
            24 => spec.treat_whitespace_as_suffix = as_bool(&value, "treat_whitespace_as_suffix")?,
            35 => spec.byte_fallback = as_bool(&value, "TrainerSpec.byte_fallback")?,
            44 => spec.unk_surface = Some(as_string(&value, "TrainerSpec.unk_surface")?),
            45 => spec.unk_piece = as_string(&value, "TrainerSpec.unk_piece")?,
            46 => spec.bos_piece = as_string(&value, "TrainerSpec.bos_piece")?,
            47 => spec.eos_piece = as_string(&value, "TrainerSpec.eos_piece")?,
            48 => spec.pad_piece = as_string(&value, "TrainerSpec.pad_piece")?,
            _ => {}
        }
    }
    Ok(spec)
}

fn parse_normalizer(bytes: &[u8]) -> Result<NormalizerSpec, String> {
    let mut spec = NormalizerSpec::default();
    let mut reader = WireReader::new(bytes);
    while let Some((field, value)) = reader.next_field()? {
        match field {
            1 => spec.name = as_string(&value, "NormalizerSpec.name")?,
            2 => spec.precompiled_charsmap_len = as_bytes(&value, "precompiled_charsmap")?.len(),
            3 => spec.add_dummy_prefix = as_bool(&value, "NormalizerSpec.add_dummy_prefix")?,
            4 => spec.remove_extra_whitespaces = as_bool(&value, "remove_extra_whitespaces")?,
            5 => spec.escape_whitespaces = as_bool(&value, "escape_whitespaces")?,
            _ => {}
        }
    }
    Ok(spec)
}

/// Decodes a whole `ModelProto`; the error says what is malformed.
pub(crate) fn parse_model_proto(bytes: &[u8]) -> Result<ModelProto, String> {
    let mut model = ModelProto::default();
    let mut reader = WireReader::new(bytes);
    while let Some((field, value)) = reader.next_field()? {
        match field {
            1 => model.pieces.push(parse_piece(as_bytes(&value, "pieces")?)?),
            2 => {
                model.trainer = parse_trainer(as_bytes(&value, "trainer_spec")?)?;
                model.has_trainer_spec = true;
            }
            3 => {
                model.normalizer = parse_normalizer(as_bytes(&value, "normalizer_spec")?)?;
                model.has_normalizer_spec = true;
            }
            5 => {
                let spec = parse_normalizer(as_bytes(&value, "denormalizer_spec")?)?;
                model.denormalizer = Some(spec);
            }
            _ => {}
        }
    }
    Ok(model)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }

    fn bytes_field(field: u64, payload: &[u8], out: &mut Vec<u8>) {
        varint(field << 3 | 2, out);
        varint(payload.len() as u64, out);
        out.extend_from_slice(payload);
    }

    #[test]
    fn reads_pieces_defaults_and_skips_unknown_fields() {
        let mut piece = Vec::new();
        bytes_field(1, "▁a".as_bytes(), &mut piece);
        varint(2 << 3 | 5, &mut piece);
        piece.extend_from_slice(&(-1.5f32).to_le_bytes());
        varint(99 << 3, &mut piece); // unknown varint field
        varint(7, &mut piece);
        let mut model = Vec::new();
        bytes_field(1, &piece, &mut model);
        let mut trainer = Vec::new();
        varint(3 << 3, &mut trainer);
        varint(2, &mut trainer);
        varint(43 << 3, &mut trainer); // pad_id = -1, sign-extended
        varint(u64::MAX, &mut trainer);
        bytes_field(2, &trainer, &mut model);
        let parsed = parse_model_proto(&model).unwrap();
        assert_eq!(parsed.pieces[0].piece, "▁a");
        assert_eq!(parsed.pieces[0].score, -1.5);
        assert_eq!(parsed.pieces[0].kind, 1);
        assert_eq!(parsed.trainer.model_type, 2);
        assert!(parsed.normalizer.remove_extra_whitespaces);
    }

    #[test]
    fn truncated_input_is_an_error() {
        let mut model = Vec::new();
        bytes_field(1, &[10, 5, b'a'], &mut model);
        assert!(parse_model_proto(&model).is_err());
        assert!(parse_model_proto(&model[..model.len() - 1]).is_err());
    }
}
