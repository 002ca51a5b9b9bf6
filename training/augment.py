"""Phone-photo augmentation for garment images (training of garment_v1), with PIL only.

The transforms live in the library, `shazzam.rephotograph`, beside the re-photographed queries of
`shazzam eval`'s robustness figure, so training and evaluation share one implementation. This
module keeps the names `training/finetune.py` imports: `phone_photo(image, rng)` returns a
224x224 RGB view (random resized crop of 45-100 % of the area, aspect 3/4-4/3, horizontal flip
p 0.5, +-12 degree rotation p 0.5, colour jitter, blur p 0.3, JPEG p 0.3), every draw from `rng`
(a numpy Generator), draw for draw as before the move, so a fixed seed gives the same views.
`rephotograph(image, rng)` is the stronger whole-image transform of the evaluation (crop,
background, rotation, perspective, colour, blur, noise, JPEG).
"""

from __future__ import annotations

from shazzam.rephotograph import colour_jitter, phone_photo, random_resized_crop, rephotograph, rephotograph_jpeg

__all__ = ["colour_jitter", "phone_photo", "random_resized_crop", "rephotograph", "rephotograph_jpeg"]
