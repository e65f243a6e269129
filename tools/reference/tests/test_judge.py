import numpy as np

import shapes_data as d
from judge import judge


def test_judge_is_exact_on_fresh_renders():
    rng = np.random.default_rng(4242)
    for _ in range(60):
        s = d.random_scene(rng)
        v = judge(d.render(s))
        assert (v.shape, v.colour, v.position) == (s.shape, s.colour, s.position)


def test_judge_survives_noise_and_specks():
    rng = np.random.default_rng(7)
    for shape in d.SHAPES:
        s = d.random_scene(rng, shape=shape, colour="purple", position="right")
        img = d.render(s).astype(np.int32) + rng.integers(-20, 21, (64, 64, 3))
        img[2:4, 2:4] = (40, 80, 220)  # a blue speck: not the largest component
        v = judge(np.clip(img, 0, 255).astype(np.uint8))
        assert (v.shape, v.colour, v.position) == (shape, "purple", "right")


def test_judge_rejects_empty_image():
    v = judge(np.full((64, 64, 3), 255, np.uint8))
    assert v.shape is None and v.colour is None
