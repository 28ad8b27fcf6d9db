#!/usr/bin/env bash
# Fetches Fashion-MNIST (Zalando, MIT; 60k train + 10k test 28x28 grayscale images, 10
# classes) for the toy training recipe (internvl::training::datasets::prepare_fashion_mnist)
# and the real-data test in crates/internvl/tests/train_datasets.rs.
#
# Source: the Debian package dataset-fashion-mnist (0.0~git20200523.55506a9-1, about 31 MB),
# which ships /usr/share/datasets/fashion-mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz.
# No root is needed: `apt-get download` fetches the .deb into a scratch folder and `dpkg-deb -x`
# unpacks it there. When apt's package lists are missing, a private copy of them is built
# (`apt-get update` with Dir::State::Lists in the scratch folder, which needs no root either).
#
# Output: assets/fashion-mnist/ holds the four verified .gz files, their uncompressed copies
# (the IDX reader needs no gzip support for those) and its own .gitignore: the data are never
# committed. Idempotent: does nothing when every file is there with the expected sha256.
#
# Usage: scripts/fetch_fashion_mnist.sh [SOURCE]
#   SOURCE (optional): the dataset-fashion-mnist .deb, or a folder holding the four .gz files
#   (e.g. /usr/share/datasets/fashion-mnist when the package is installed).
set -euo pipefail

PACKAGE="dataset-fashion-mnist"
VERSION="0.0~git20200523.55506a9-1"
SHARE="usr/share/datasets/fashion-mnist"

# sha256 of the files as the Debian package ships them (.gz), then of their contents.
declare -A SHA256=(
  [train-images-idx3-ubyte.gz]=b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7
  [train-labels-idx1-ubyte.gz]=0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056
  [t10k-images-idx3-ubyte.gz]=cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa
  [t10k-labels-idx1-ubyte.gz]=8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05
  [train-images-idx3-ubyte]=c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888
  [train-labels-idx1-ubyte]=bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9
  [t10k-images-idx3-ubyte]=5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b
  [t10k-labels-idx1-ubyte]=0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34
)
STEMS="train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="$ROOT/assets/fashion-mnist"
SOURCE="${1:-}"

sha_of() { sha256sum "$1" | cut -d' ' -f1; }

# True when $DEST/$1 exists with its recorded sha256.
verified() { [[ -f "$DEST/$1" && "$(sha_of "$DEST/$1")" == "${SHA256[$1]}" ]]; }

all_verified() {
  for stem in $STEMS; do
    verified "$stem.gz" && verified "$stem" || return 1
  done
}

if all_verified; then
  echo "Fashion-MNIST is already in $DEST"
  exit 0
fi

SCRATCH="$(mktemp -d)"
trap 'rm -rf "$SCRATCH"' EXIT
# As root, apt downloads as the `_apt` user, who cannot write into the private scratch
# folder: keep root for this download (as a plain user, apt runs as that user anyway).
APT=(apt-get)
if [[ $EUID -eq 0 ]]; then APT+=(-o APT::Sandbox::User=root); fi

# Downloads the .deb into $SCRATCH with apt-get; prints its path.
download_deb() {
  local deb
  if (cd "$SCRATCH" && "${APT[@]}" download -q "$PACKAGE=$VERSION" >&2); then
    ls "$SCRATCH"/"$PACKAGE"_*.deb
    return 0
  fi
  # No package lists (a fresh container) or an unknown version: build private lists, which
  # needs no root, then retry (pinned first, then whatever version the lists offer; the
  # sha256 check below rejects different data).
  echo "apt-get download failed; updating a private copy of the package lists..." >&2
  local apt_opts=(-o "Dir::State::Lists=$SCRATCH/lists" -o "Dir::Cache=$SCRATCH/cache"
                  -o Debug::NoLocking=1)
  mkdir -p "$SCRATCH/lists/partial" "$SCRATCH/cache/archives/partial"
  if ! "${APT[@]}" "${apt_opts[@]}" update -q >&2; then
    return 1
  fi
  for spec in "$PACKAGE=$VERSION" "$PACKAGE"; do
    if (cd "$SCRATCH" && "${APT[@]}" "${apt_opts[@]}" download -q "$spec" >&2); then
      deb="$(ls "$SCRATCH"/"$PACKAGE"_*.deb)"
      echo "$deb"
      return 0
    fi
  done
  return 1
}

# The folder holding the four .gz files.
if [[ -n "$SOURCE" && -d "$SOURCE" ]]; then
  GZ_DIR="$SOURCE"
elif [[ -n "$SOURCE" && -f "$SOURCE" ]]; then
  dpkg-deb -x "$SOURCE" "$SCRATCH/deb"
  GZ_DIR="$SCRATCH/deb/$SHARE"
elif [[ -f "/$SHARE/train-images-idx3-ubyte.gz" ]]; then
  GZ_DIR="/$SHARE"  # the package is installed
else
  echo "downloading $PACKAGE $VERSION (about 31 MB) with apt-get..."
  if ! DEB="$(download_deb)"; then
    cat >&2 <<EOF
error: could not download the Debian package $PACKAGE with apt-get.
  On Debian/Ubuntu, either run 'sudo apt-get update' and retry, or install it
  ('sudo apt-get install $PACKAGE', then rerun this script), or download
  ${PACKAGE}_${VERSION}_all.deb from https://packages.debian.org/bookworm/$PACKAGE
  and run: $0 path/to/${PACKAGE}_${VERSION}_all.deb
EOF
    exit 1
  fi
  dpkg-deb -x "$DEB" "$SCRATCH/deb"
  GZ_DIR="$SCRATCH/deb/$SHARE"
fi

mkdir -p "$DEST"
for stem in $STEMS; do
  src="$GZ_DIR/$stem.gz"
  if [[ ! -f "$src" ]]; then
    echo "error: $src is missing" >&2
    exit 1
  fi
  actual="$(sha_of "$src")"
  if [[ "$actual" != "${SHA256[$stem.gz]}" ]]; then
    echo "error: $src has sha256 $actual, expected ${SHA256[$stem.gz]}" >&2
    exit 1
  fi
  cp "$src" "$DEST/$stem.gz.part"
  gzip -dc "$src" > "$DEST/$stem.part"
  actual="$(sha_of "$DEST/$stem.part")"
  if [[ "$actual" != "${SHA256[$stem]}" ]]; then
    rm -f "$DEST/$stem.part" "$DEST/$stem.gz.part"
    echo "error: $stem (uncompressed) has sha256 $actual, expected ${SHA256[$stem]}" >&2
    exit 1
  fi
  mv "$DEST/$stem.gz.part" "$DEST/$stem.gz"
  mv "$DEST/$stem.part" "$DEST/$stem"
done
printf '*\n' > "$DEST/.gitignore"
cat > "$DEST/SOURCES.md" <<MD
Fashion-MNIST (https://github.com/zalandoresearch/fashion-mnist), Copyright 2017 Zalando SE,
MIT licence; the files of the Debian package $PACKAGE $VERSION, fetched by
scripts/fetch_fashion_mnist.sh. 60,000 training and 10,000 test 28x28 grayscale images,
labels 0-9: T-shirt/top, Trouser, Pullover, Dress, Coat, Sandal, Shirt, Sneaker, Bag, Ankle boot.
MD
echo "wrote $DEST"
