# Reference beam-search captions for internvl-rs: InternVL-G generate() of the OFFICIAL code
# (clip_benchmark HF copy from OpenGVLab/InternVL at 2410d1db, fetched separately into
# /tmp/official/internvl_hf with a peft stub in /tmp/official/stubs) on the tiny fixture model.
# Usage: python scripts/gen_beam_refs.py tests/fixtures/internvl_c_g  (torch 2.5.1, transformers 4.37.2)
import json, sys
sys.path.insert(0, '/tmp/official/stubs'); sys.path.insert(0, '/tmp/official')
import torch
from safetensors.torch import load_file
import internvl_hf.modeling_qllama as mq
from internvl_hf.modeling_internvl import InternVLModel
from internvl_hf.configuration_internvl import InternVLConfig
fixture = sys.argv[1]
cfg_json = json.load(open(f'{fixture}/model/config.json'))
width = cfg_json['vision_config']['hidden_size']
orig_init = mq.LlamaCrossAttention.__init__
def patched(self, config):
    orig_init(self, config)
    import torch.nn as nn
    self.vision_hidden_size = width
    self.k_proj = nn.Linear(width, self.num_heads * self.head_dim, bias=False)
    self.v_proj = nn.Linear(width, self.num_heads * self.head_dim, bias=False)
    self.norm2 = mq.LlamaRMSNorm(width, eps=config.rms_norm_eps)
mq.LlamaCrossAttention.__init__ = patched
torch.set_num_threads(2)
model = InternVLModel.from_pretrained(f'{fixture}/model', torch_dtype=torch.float32).eval()
exp = load_file(f'{fixture}/expected.safetensors')
pix = exp['inputs/pixel_values_retrieval']
ids = exp['caption/input_ids']
out = {}
with torch.no_grad():
    g = model.generate(pixel_values=pix, input_ids=ids, attention_mask=torch.ones_like(ids),
                       do_sample=False, num_beams=1, max_new_tokens=16, min_new_tokens=8)
    out['greedy_16'] = g[:, 1:].tolist()
    for beams, new, mn in [(3, 10, 4), (5, 12, 8), (2, 6, 2), (4, 20, 0)]:
        rows = []
        for i in range(pix.shape[0]):
            o = model.generate(pixel_values=pix[i:i+1], input_ids=ids[i:i+1], attention_mask=torch.ones_like(ids[i:i+1]),
                               do_sample=False, num_beams=beams, max_new_tokens=new, min_new_tokens=mn)
            rows.append(o[0, 1:].tolist())
        out[f'beams{beams}_max{new}_min{mn}'] = rows
    # Frequent tokens as EOS, so that finished hypotheses, early stopping and the final
    # selection of transformers' beam search are exercised too.
    for beams, new, mn, eos in [(3, 12, 0, 551), (4, 14, 2, 685), (5, 16, 1, 652), (2, 10, 0, 273), (3, 12, 3, 36),
                                (2, 3, 0, 551), (2, 4, 0, 126), (3, 3, 0, 126), (2, 5, 0, 24), (3, 6, 0, 420)]:
        rows = []
        for i in range(pix.shape[0]):
            o = model.generate(pixel_values=pix[i:i+1], input_ids=ids[i:i+1], attention_mask=torch.ones_like(ids[i:i+1]),
                               do_sample=False, num_beams=beams, max_new_tokens=new, min_new_tokens=mn,
                               eos_token_id=eos, pad_token_id=0)
            rows.append(o[0, 1:].tolist())
        out[f'beams{beams}_max{new}_min{mn}_eos{eos}'] = rows
print(json.dumps(out))
