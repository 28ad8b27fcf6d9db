//! What InternVL-Chat's `chat()` / `batch_chat()` do around the language model (spec §7): image
//! embeddings scattered over the `<IMG_CONTEXT>` positions, mask-derived position ids, and
//! greedy decoding with a KV cache as transformers 4.37 `generate` does it (finished rows of a
//! batch keep running, fed the pad id, until every row has finished).

use candle_core::{DType, Device, Tensor};

use super::{KvCache, Llm};
use crate::{Error, Result};

/// Position ids `[B, S]` (i64) of an attention mask `[B, S]`: `cumsum(mask) − 1`, with padding
/// positions set to 1, like the release's `prepare_inputs_for_generation`.
pub fn position_ids(attention_mask: &Tensor) -> Result<Tensor> {
    let rows = mask_rows(attention_mask)?;
    let (batch, len) = (rows.len(), rows.first().map_or(0, Vec::len));
    let data: Vec<i64> = rows.iter().flat_map(|row| row_positions(row)).collect();
    Ok(Tensor::from_vec(
        data,
        (batch, len),
        attention_mask.device(),
    )?)
}

fn row_positions(row: &[bool]) -> Vec<i64> {
    let mut seen = 0i64;
    row.iter()
        .map(|&real| {
            seen += i64::from(real);
            if real {
                seen - 1
            } else {
                1
            }
        })
        .collect()
}

fn mask_rows(attention_mask: &Tensor) -> Result<Vec<Vec<bool>>> {
    let rows = attention_mask.to_dtype(DType::F32)?.to_vec2::<f32>()?;
    Ok(rows
        .into_iter()
        .map(|row| row.into_iter().map(|m| m != 0.0).collect())
        .collect())
}

/// Replaces the embeddings of the `image_token_id` positions of `input_ids` `[B, T]` by the rows
/// of `image_embeds` (`[N, C]` or `[tiles, tokens, C]`), in batch-major then position order — the
/// release's `input_embeds[selected] = vit_embeds`. The counts must match.
pub fn scatter_image_embeds(
    embeds: &Tensor,
    input_ids: &Tensor,
    image_token_id: u32,
    image_embeds: &Tensor,
) -> Result<Tensor> {
    let (b, t, c) = embeds.dims3()?;
    let image = image_embeds.reshape(((), c))?.to_dtype(embeds.dtype())?;
    let ids = input_ids
        .to_dtype(DType::I64)?
        .flatten_all()?
        .to_vec1::<i64>()?;
    let mut next_image_row = b * t;
    // Gather from [text rows ; image rows]: each image position takes the next image row.
    let index: Vec<u32> = ids
        .iter()
        .enumerate()
        .map(|(i, &id)| {
            if id == i64::from(image_token_id) {
                next_image_row += 1;
                (next_image_row - 1) as u32
            } else {
                i as u32
            }
        })
        .collect();
    let placeholders = next_image_row - b * t;
    if placeholders != image.dim(0)? {
        return Err(Error::InvalidArgument(format!(
            "{placeholders} image-context tokens (id {image_token_id}) but {} image embeddings",
            image.dim(0)?
        )));
    }
    let rows = Tensor::cat(&[&embeds.reshape((b * t, c))?, &image], 0)?;
    let index = Tensor::from_vec(index, b * t, embeds.device())?;
    Ok(rows.index_select(&index, 0)?.reshape((b, t, c))?)
}

/// Settings of [`greedy`].
#[derive(Debug, Clone)]
pub struct GreedyOptions {
    /// At most this many tokens per row.
    pub max_new_tokens: usize,
    /// A row finishes when it produces one of these (InternVL chat: the template separator).
    pub eos_token_ids: Vec<u32>,
    /// Fed to and reported for finished rows; the first eos id when `None` (as transformers does
    /// when the model has no pad id).
    pub pad_token_id: Option<u32>,
    /// Keep every step's logits in [`GreedyOutput::step_logits`].
    pub keep_step_logits: bool,
}

impl GreedyOptions {
    /// `max_new_tokens` and the stop ids; pad = first stop id; logits not kept.
    pub fn new(max_new_tokens: usize, eos_token_ids: Vec<u32>) -> Self {
        Self {
            max_new_tokens,
            eos_token_ids,
            pad_token_id: None,
            keep_step_logits: false,
        }
    }
}

/// The result of [`greedy`].
#[derive(Debug, Clone)]
pub struct GreedyOutput {
    /// `[B][steps]` new tokens, each row including its eos and then pad ids (transformers'
    /// `generate` output without the prompt).
    pub tokens: Vec<Vec<u32>>,
    /// Per step, the raw f32 logits `[B, V]` the token was chosen from (when kept).
    pub step_logits: Vec<Tensor>,
}

impl GreedyOutput {
    /// Row `row`'s tokens up to, not including, its first eos.
    pub fn answer(&self, row: usize, eos_token_ids: &[u32]) -> &[u32] {
        let tokens = &self.tokens[row];
        let end = tokens
            .iter()
            .position(|t| eos_token_ids.contains(t))
            .unwrap_or(tokens.len());
        &tokens[..end]
    }
}

/// Greedy decoding from prompt embeddings `[B, T, C]` with `attention_mask` `[B, T]` (left
/// padding), the way the release's `generate(inputs_embeds=…, do_sample=False)` runs.
pub fn greedy(
    llm: &Llm,
    embeds: &Tensor,
    attention_mask: &Tensor,
    options: &GreedyOptions,
) -> Result<GreedyOutput> {
    let pad = options
        .pad_token_id
        .or_else(|| options.eos_token_ids.first().copied())
        .ok_or_else(|| Error::InvalidArgument("greedy decoding needs an eos or pad id".into()))?;
    let device = embeds.device();
    let mut mask = mask_rows(attention_mask)?;
    let batch = mask.len();
    let mut cache = KvCache::new();
    let mut output = GreedyOutput {
        tokens: vec![Vec::new(); batch],
        step_logits: Vec::new(),
    };
    let mut finished = vec![false; batch];
    let mut logits = llm.forward_last(
        embeds,
        &position_ids(attention_mask)?,
        Some(attention_mask),
        &mut cache,
    )?;
    for step in 0..options.max_new_tokens {
        let mut next = argmax_rows(&logits)?;
        if options.keep_step_logits {
            output.step_logits.push(logits);
        }
        for (row, token) in next.iter_mut().enumerate() {
            if finished[row] {
                *token = pad;
            }
            output.tokens[row].push(*token);
            finished[row] |= options.eos_token_ids.contains(token);
        }
        if finished.iter().all(|f| *f) || step + 1 == options.max_new_tokens {
            break;
        }
        logits = decode_step(llm, &next, &mut mask, &mut cache, device)?;
    }
    Ok(output)
}

/// The index of the largest logit of each row of `[B, V]` logits.
fn argmax_rows(logits: &Tensor) -> Result<Vec<u32>> {
    Ok(logits.argmax(candle_core::D::Minus1)?.to_vec1::<u32>()?)
}

/// Feeds one token per row, extending the mask with a real position.
fn decode_step(
    llm: &Llm,
    tokens: &[u32],
    mask: &mut [Vec<bool>],
    cache: &mut KvCache,
    device: &Device,
) -> Result<Tensor> {
    for row in mask.iter_mut() {
        row.push(true);
    }
    let batch = tokens.len();
    let positions: Vec<i64> = mask
        .iter()
        .map(|row| row.iter().filter(|m| **m).count() as i64 - 1)
        .collect();
    let flat_mask: Vec<u8> = mask.iter().flatten().map(|m| u8::from(*m)).collect();
    let len = mask.first().map_or(0, Vec::len);
    let ids = Tensor::from_slice(tokens, (batch, 1), device)?;
    let embeds = llm.embed(&ids)?;
    llm.forward_last(
        &embeds,
        &Tensor::from_vec(positions, (batch, 1), device)?,
        Some(&Tensor::from_vec(flat_mask, (batch, len), device)?),
        cache,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_ids_count_real_tokens_and_pads_get_one() {
        let mask = Tensor::new(&[[0u32, 0, 1, 1, 1], [1, 1, 1, 1, 1]], &Device::Cpu).unwrap();
        let ids = position_ids(&mask).unwrap().to_vec2::<i64>().unwrap();
        assert_eq!(ids, vec![vec![1, 1, 0, 1, 2], vec![0, 1, 2, 3, 4]]);
    }

    #[test]
    fn image_rows_replace_placeholders_in_order() {
        let embeds = Tensor::zeros((2, 3, 2), DType::F32, &Device::Cpu).unwrap();
        let ids = Tensor::new(&[[5u32, 9, 9], [9, 5, 5]], &Device::Cpu).unwrap();
        let image = Tensor::new(&[[1f32, 1.], [2., 2.], [3., 3.]], &Device::Cpu).unwrap();
        let out = scatter_image_embeds(&embeds, &ids, 9, &image).unwrap();
        let rows = out.to_vec3::<f32>().unwrap();
        assert_eq!(rows[0], vec![vec![0., 0.], vec![1., 1.], vec![2., 2.]]);
        assert_eq!(rows[1], vec![vec![3., 3.], vec![0., 0.], vec![0., 0.]]);
        let short = image.narrow(0, 0, 2).unwrap();
        assert!(scatter_image_embeds(&embeds, &ids, 9, &short).is_err());
    }
}
