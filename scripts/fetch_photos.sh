#!/usr/bin/env bash
# Assembles a small real-photo zero-shot / retrieval set from images that PyPI wheels ship
# (scikit-image, scikit-learn, matplotlib, gradio; licences in assets/photos/SOURCES.md).
# Output: assets/photos/<class>/<file> (one folder per class) + assets/photos/captions.json.
# Used by the evaluation-harness test and the report in docs/. Needs pip and network access to PyPI;
# idempotent (skips the download when the photos are already there).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="$root/assets/photos"
if [[ -f "$out/karpathy_test.json" ]]; then
  echo "photos already in $out"
  exit 0
fi
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
python3 -m pip download --no-deps -q -d "$scratch" \
  scikit-image==0.26.0 scikit-learn==1.9.1 matplotlib==3.11.2 gradio==6.31.0

# class|wheel prefix|path inside the wheel
manifest='
cat|scikit_image|skimage/data/chelsea.png
astronaut|scikit_image|skimage/data/astronaut.png
coffee|scikit_image|skimage/data/coffee.png
rocket|scikit_image|skimage/data/rocket.jpg
motorcycle|scikit_image|skimage/data/motorcycle_left.png
motorcycle|scikit_image|skimage/data/motorcycle_right.png
moon|scikit_image|skimage/data/moon.png
coins|scikit_image|skimage/data/coins.png
galaxy|scikit_image|skimage/data/hubble_deep_field.jpg
pagoda|scikit_learn|sklearn/datasets/images/china.jpg
flower|scikit_learn|sklearn/datasets/images/flower.jpg
person|matplotlib|matplotlib/mpl-data/sample_data/grace_hopper.jpg
person|scikit_image|skimage/data/camera.png
cheetah|gradio|gradio/media_assets/images/cheetah.jpg
cheetah|gradio|gradio/media_assets/images/cheetah1.jpg
cheetah|gradio|gradio/test_data/cheetah2.jpg
lion|gradio|gradio/media_assets/images/lion.jpg
tower|gradio|gradio/media_assets/images/tower.jpg
'
mkdir -p "$out"
while IFS='|' read -r class wheel path; do
  [[ -z "$class" ]] && continue
  mkdir -p "$out/$class"
  unzip -p "$scratch/$wheel"-*.whl "$path" > "$out/$class/$(basename "$path")"
done <<< "$manifest"

# One "a photo of a/an <class>" caption per image, for the retrieval report.
python3 - "$out" <<'PY'
import json, os, sys
out = sys.argv[1]
captions = {"cat": "a photo of a cat", "astronaut": "a photo of an astronaut",
            "coffee": "a photo of a cup of coffee", "rocket": "a photo of a rocket",
            "motorcycle": "a photo of a motorcycle", "moon": "a photo of the moon",
            "coins": "a photo of coins", "galaxy": "a photo of galaxies in deep space",
            "pagoda": "a photo of a pagoda", "flower": "a photo of a flower",
            "person": "a photo of a person", "cheetah": "a photo of a cheetah",
            "lion": "a photo of a lion", "tower": "a photo of the eiffel tower"}
items = []
for cls in sorted(os.listdir(out)):
    d = os.path.join(out, cls)
    if not os.path.isdir(d):
        continue
    for f in sorted(os.listdir(d)):
        items.append({"image": f"{cls}/{f}", "label": cls, "caption": captions[cls]})
json.dump({"classes": sorted(captions), "items": items}, open(os.path.join(out, "captions.json"), "w"), indent=1)
# The same set as a Karpathy-split JSON (COCO / Flickr30K format) for `internvl eval retrieval|caption`.
karpathy = {"images": [{"filepath": os.path.dirname(it["image"]), "filename": os.path.basename(it["image"]),
                        "split": "test", "sentences": [{"raw": it["caption"]}, {"raw": it["caption"].replace("a photo of", "an image of")}]}
                       for it in items]}
json.dump(karpathy, open(os.path.join(out, "karpathy_test.json"), "w"), indent=1)
print(f"{len(items)} photos in {len(captions)} classes -> {out}")
PY
cat > "$out/SOURCES.md" <<'MD'
Images extracted from PyPI wheels by scripts/fetch_photos.sh:
scikit-image 0.26.0 (skimage/data: public domain / CC0, see skimage.data docstrings),
scikit-learn 1.9.1 (china.jpg, flower.jpg: CC BY 2.0, see sklearn/datasets/images/README.txt),
matplotlib 3.11.2 (grace_hopper.jpg: US Navy photograph, public domain),
gradio 6.31.0 (media_assets, test_data: Apache-2.0 package).
MD
