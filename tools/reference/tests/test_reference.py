import copy

import numpy as np
import pytest
import torch

import checkpoint
import pipeline
import tiny
import vlm as vlm_mod
from gen_config import GenerationConfig
from rope import image_positions
from sampler import sample, timesteps


@pytest.fixture(scope="module")
def tok():
    return tiny.tokenizer()


@pytest.fixture(scope="module")
def vlm(tok):
    return tiny.make_vlm(tok, tie=True, seed=0)


def contexts(vlm, tok, replica, prompts=("a red circle",)):
    return pipeline.contexts(vlm, tok, replica, list(prompts))


SWITCHES = [
    {},
    {"ctx_kv": "replica"},
    {"img_pos": "rope1d"},
    {"tcra": "post_softmax"},
    {"tcra": "none"},
    {"per_group_head": True},
    {"time_shift": 3.0},
    {"group_boundaries": [0.0, 0.3, 1.0]},
]


@pytest.mark.parametrize("switches", SWITCHES)
def test_every_switch_runs_with_expected_shapes(vlm, tok, switches):
    cfg = tiny.gen_config(**switches)
    rep = tiny.make_replica(cfg, seed=1)
    cond, uncond = contexts(vlm, tok, rep)
    noise = pipeline.noise_batch(cfg, [5])
    record = []
    x = sample(rep, noise, cond, uncond, steps=4, record=record)
    assert x.shape == (1, cfg.latent_channels, cfg.latent_size, cfg.latent_size)
    assert torch.isfinite(x).all()
    assert len(record) == 4
    for r in record:
        assert [e["layer"] for e in r["trace"]] == list(cfg.layers_of(r["group"]))


@pytest.mark.parametrize("key,alt", [("ctx_kv", "replica"), ("img_pos", "rope1d"), ("tcra", "post_softmax"),
                                     ("tcra", "none"), ("time_shift", 3.0)])
def test_each_switch_changes_the_result(vlm, tok, key, alt):
    base = tiny.gen_config()
    other = tiny.gen_config(**{key: alt})
    outs = []
    for cfg in (base, other):
        rep = tiny.make_replica(cfg, seed=1)
        cond, uncond = contexts(vlm, tok, rep)
        outs.append(sample(rep, pipeline.noise_batch(cfg, [5]), cond, uncond, steps=4))
    assert (outs[0] - outs[1]).abs().max() > 1e-4


def replica_with_vlm_kv_projections(vlm, cfg):
    """A tiny replica whose k/v projections are the VLM's: its context K/V must then equal the VLM's cache."""
    rep = tiny.make_replica(cfg, seed=1)
    lm = vlm.model.language_model
    with torch.no_grad():
        for l, layer in enumerate(rep.layers):
            src = lm.layers[l].self_attn
            for name in ("k_proj", "v_proj"):
                getattr(layer, name).weight.copy_(getattr(src, name).weight)
                getattr(layer, name).bias.copy_(getattr(src, name).bias)
    return rep


def test_replica_context_kv_equals_vlm_cache_when_projections_match(vlm, tok):
    # Oracle: transformers' own KV cache (its M-RoPE). The replica's rope + projections must reproduce it.
    cfg = tiny.gen_config(ctx_kv="replica")
    rep = replica_with_vlm_kv_projections(vlm, cfg)
    ids = [pipeline.generation_ids(tok, cfg, "a blue star on the left"), pipeline.generation_ids(tok, cfg, "")]
    out = vlm_mod.prompt_outputs(vlm, ids)
    ctx = rep.bind_context(out)
    for l in range(cfg.num_layers):
        m = out.mask
        # float32 rounding of two differently ordered computations
        assert torch.allclose(ctx.k[l].transpose(1, 2)[m], out.cache_k[l].transpose(1, 2)[m], atol=1e-5)
        assert torch.allclose(ctx.v[l].transpose(1, 2)[m], out.cache_v[l].transpose(1, 2)[m], atol=1e-5)


def test_prompt_outputs_are_padding_independent(vlm, tok):
    a = vlm_mod.prompt_outputs(vlm, [[5, 6, 7]])
    b = vlm_mod.prompt_outputs(vlm, [[5, 6, 7], [8, 9, 10, 11, 12, 13]])
    for l in range(len(a.cache_k)):
        assert torch.allclose(a.cache_k[l][0], b.cache_k[l][0, :, :3], atol=1e-5)


def test_layerwise_with_one_group_equals_dense(vlm, tok):
    cfg = tiny.gen_config(layers=4, groups=1, group_boundaries=[0.0, 1.0])
    rep = tiny.make_replica(cfg, seed=3)
    cond, uncond = contexts(vlm, tok, rep)
    noise = pipeline.noise_batch(cfg, [11])
    a = sample(rep, noise, cond, uncond, steps=5)
    b = sample(rep, noise, cond, uncond, steps=5, dense=True)
    assert torch.equal(a, b)


def test_dense_differs_from_layerwise_with_groups(vlm, tok):
    cfg = tiny.gen_config()
    rep = tiny.make_replica(cfg, seed=3)
    cond, uncond = contexts(vlm, tok, rep)
    noise = pipeline.noise_batch(cfg, [11])
    a = sample(rep, noise, cond, uncond, steps=4)
    b = sample(rep, noise, cond, uncond, steps=4, dense=True)
    assert (a - b).abs().max() > 1e-4


def test_zero_tcra_gates_make_all_tcra_modes_equal(vlm, tok):
    outs = []
    for mode in ("pre_softmax", "post_softmax", "none"):
        cfg = tiny.gen_config(tcra=mode)
        rep = tiny.make_replica(cfg, seed=4)
        with torch.no_grad():
            for layer in rep.layers:
                layer.tcra_gate.weight.zero_()
                layer.tcra_gate.bias.zero_()
        cond, uncond = contexts(vlm, tok, rep)
        outs.append(sample(rep, pipeline.noise_batch(cfg, [2]), cond, uncond, steps=3))
    assert torch.allclose(outs[0], outs[1], atol=1e-5) and torch.allclose(outs[0], outs[2], atol=1e-5)


def test_post_softmax_image_block_is_part_of_a_normalised_row(vlm, tok):
    cfg = tiny.gen_config(tcra="post_softmax")
    rep = tiny.make_replica(cfg, seed=4)
    cond, _ = contexts(vlm, tok, rep)
    trace = []
    rep.velocity(pipeline.noise_batch(cfg, [1]), torch.tensor([0.3]), cond, range(4), 0, trace)
    for e in trace:
        # image-image probabilities are a part of a row that sums to 1 (the prompt columns hold the rest)
        s = e["block"].sum(-1)
        assert (s <= 1 + 1e-5).all() and (s > 0).all()


def test_guidance_one_skips_unconditional(vlm, tok):
    cfg = tiny.gen_config()
    rep = tiny.make_replica(cfg, seed=5)
    cond, uncond = contexts(vlm, tok, rep)
    noise = pipeline.noise_batch(cfg, [3])
    assert torch.equal(sample(rep, noise, cond, uncond, steps=3, scale=1.0), sample(rep, noise, cond, None, steps=3))


def test_heun_and_euler_differ_and_heun_uses_twice_the_evaluations(vlm, tok):
    cfg = tiny.gen_config()
    rep = tiny.make_replica(cfg, seed=5)
    cond, uncond = contexts(vlm, tok, rep)
    noise = pipeline.noise_batch(cfg, [3])
    re, rh = [], []
    a = sample(rep, noise, cond, uncond, steps=4, record=re)
    b = sample(rep, noise, cond, uncond, steps=4, method="heun", record=rh)
    assert len(rh) == 2 * len(re) and (a - b).abs().max() > 1e-5


def test_seed_reproducibility_end_to_end(vlm, tok):
    cfg = tiny.gen_config()
    rep = tiny.make_replica(cfg, seed=6)
    ae = tiny.make_ae(0)
    a, _ = pipeline.generate(vlm, tok, rep, ae, "a red circle", seed=9, steps=3)
    b, _ = pipeline.generate(vlm, tok, rep, ae, "a red circle", seed=9, steps=3)
    c, _ = pipeline.generate(vlm, tok, rep, ae, "a red circle", seed=10, steps=3)
    assert a.shape == (tiny.IMAGE_SIZE, tiny.IMAGE_SIZE, 3)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_group_of_and_timesteps():
    cfg = tiny.gen_config(layers=4, groups=4, group_boundaries=[0.0, 0.25, 0.5, 0.75, 1.0])
    assert [cfg.group_of(t) for t in (0.0, 0.2499, 0.25, 0.74, 0.75, 1.0)] == [0, 0, 1, 2, 3, 3]
    assert list(cfg.layers_of(2)) == [2]
    ts = timesteps(40, 1.0)
    assert ts[0] == 0.0 and ts[-1] == 1.0 and abs(ts[10] - 0.25) < 1e-12
    groups = [cfg.group_of(t) for t in ts[:-1]]
    assert [groups.count(k) for k in range(4)] == [10, 10, 10, 10]
    shifted = timesteps(40, 3.0)
    assert shifted[0] == 0.0 and shifted[-1] == 1.0 and shifted[20] < 0.5


def test_config_validation_rejects_bad_switches():
    with pytest.raises(ValueError):
        tiny.gen_config(tcra="sideways")
    with pytest.raises(ValueError):
        tiny.gen_config(group_boundaries=[0.0, 0.6, 0.5, 1.0], groups=2)


def test_image_positions():
    p = image_positions(torch.tensor([7]), 3, "mrope2d")[0]
    assert p[0].tolist() == [7] * 9
    assert p[1].tolist() == [7, 7, 7, 8, 8, 8, 9, 9, 9] and p[2].tolist() == [7, 8, 9] * 3
    q = image_positions(torch.tensor([7]), 3, "rope1d")[0]
    assert q[0].tolist() == list(range(7, 16)) and torch.equal(q[0], q[2])


def test_greedy_equals_transformers_generate(tok):
    for tie in (True, False):
        model = tiny.make_vlm(tok, tie=tie, seed=2)
        img = np.random.default_rng(0).integers(0, 256, (40, 70, 3)).astype(np.uint8)  # non-square
        pv, grid = vlm_mod.preprocess(tiny.processor(), img)
        n = vlm_mod.merged_tokens(grid, 2)
        ids = vlm_mod.understanding_ids(tok, "What shape is it?", model.config.image_token_id, n)
        ours = vlm_mod.greedy(model, ids, pv, grid, max_new=6)
        t = torch.tensor([ids])
        ref = model.generate(input_ids=t, pixel_values=pv, image_grid_thw=grid,
                             mm_token_type_ids=(t == model.config.image_token_id).int(),
                             attention_mask=torch.ones_like(t), max_new_tokens=6, do_sample=False,
                             min_new_tokens=6)
        assert ours == ref[0, len(ids):].tolist()


def test_checkpoint_roundtrip(tmp_path, vlm, tok):
    cfg = tiny.gen_config(per_group_head=True, ctx_kv="replica")
    rep = tiny.make_replica(cfg, seed=7)
    ae = tiny.make_ae(1)
    checkpoint.save(tmp_path, copy.deepcopy(vlm), tok, tiny.processor(), cfg, rep, ae)
    vlm2, tok2, proc2, cfg2, rep2, ae2 = checkpoint.load(tmp_path)
    assert cfg2 == cfg
    a, _ = pipeline.generate(vlm, tok, rep, ae, "a green square", seed=1, steps=3)
    b, _ = pipeline.generate(vlm2, tok2, rep2, ae2, "a green square", seed=1, steps=3)
    assert np.array_equal(a, b)
    assert "groups.1.image_head.proj.weight" in rep2.state_dict()


IMAGE = np.random.default_rng(5).integers(0, 256, (40, 70, 3)).astype(np.uint8)  # non-square: 2x3 tokens


def image_prompt(vlm, tok, cfg, prompt="a red star", image=IMAGE):
    return pipeline.image_prompt(vlm, tok, tiny.processor(), cfg, prompt, image)


def test_image_prompt_layout_and_positions(vlm, tok):
    cfg = tiny.gen_config()
    ids, out = image_prompt(vlm, tok, cfg)
    text_ids = pipeline.generation_ids(tok, cfg, "a red star")
    pad, vs, ve = (tok.convert_tokens_to_ids(s) for s in ("<|image_pad|>", "<|vision_start|>", "<|vision_end|>"))
    # The image item sits before the text inside the user turn: the template's text, with
    # <|vision_start|>, six pads (56x84 px -> 4x6 patches -> 2x3 merged) and <|vision_end|> inserted.
    i = ids.index(vs)
    assert ids[i + 1:i + 7] == [pad] * 6 and ids[i + 7] == ve
    assert ids[:i] + ids[i + 8:] == text_ids
    # Positions are transformers' get_rope_index; start is the next free position, not P.
    pos = out.positions[0]
    assert pos.shape == (3, len(ids))
    assert pos[:, i + 1:i + 7].tolist() == [[i + 1] * 6, [i + 1] * 3 + [i + 2] * 3, [i + 1, i + 2, i + 3] * 2]
    assert int(out.start[0]) == int(pos.max()) + 1 == len(ids) - 6 + 3
    assert out.mask.all()


def test_image_prompt_outputs_are_transformers_understanding_pass(vlm, tok):
    # Oracle: Qwen2VLForConditionalGeneration's own forward (its positions, its splice of the vision
    # features) with a KV cache, exactly as understanding runs a prompt.
    cfg = tiny.gen_config()
    ids, out = image_prompt(vlm, tok, cfg)
    pv, grid = vlm_mod.preprocess(tiny.processor(), IMAGE)
    t = torch.tensor([ids])
    with torch.no_grad():
        ref = vlm(input_ids=t, pixel_values=pv, image_grid_thw=grid, use_cache=True,
                  mm_token_type_ids=(t == vlm.config.image_token_id).int())
        feats = vlm.model.get_image_features(pv, grid).pooler_output[0]
    vlm.model.rope_deltas = None  # the model caches them; later calls must not see ours
    cache = ref.cache if hasattr(ref, "cache") else ref.past_key_values
    for l, layer in enumerate(cache.layers):
        assert torch.equal(out.cache_k[l], layer.keys) and torch.equal(out.cache_v[l], layer.values)
    # Layer 0's input holds the merged vision features at the pads (normed by input_layernorm).
    pads = t[0] == vlm.config.image_token_id
    ln = vlm.model.language_model.layers[0].input_layernorm
    assert torch.equal(out.normed_inputs[0][0, pads], ln(feats))


def test_image_changes_prompt_kv_only_from_the_image_on(vlm, tok):
    cfg = tiny.gen_config()
    ids, a = image_prompt(vlm, tok, cfg)
    other = np.random.default_rng(6).integers(0, 256, (40, 70, 3)).astype(np.uint8)
    _, b = image_prompt(vlm, tok, cfg, image=other)
    text = vlm_mod.prompt_outputs(vlm, [pipeline.generation_ids(tok, cfg, "a red star")])
    item = ids.index(tok.convert_tokens_to_ids("<|vision_start|>"))
    first_pad = item + 1
    for l in range(cfg.num_layers):
        # Causal: the tokens before the image item see the same keys either way.
        assert torch.allclose(a.cache_k[l][..., :item, :], text.cache_k[l][..., :item, :], atol=1e-6)
        assert (a.cache_v[l][..., first_pad:, :] - b.cache_v[l][..., first_pad:, :]).abs().max() > 1e-3
    assert (a.cache_k[-1][..., -1, :] - text.cache_k[-1][..., -1, :]).abs().max() > 1e-3


def test_text_only_prompt_path_is_unchanged(vlm, tok):
    # contexts() without an image is exactly prompt_outputs + bind_context of the text ids.
    for switches in ({}, {"ctx_kv": "replica"}):
        cfg = tiny.gen_config(**switches)
        rep = tiny.make_replica(cfg, seed=1)
        cond, uncond = pipeline.contexts(vlm, tok, rep, ["a red star"])
        ref = rep.bind_context(vlm_mod.prompt_outputs(vlm, [pipeline.generation_ids(tok, cfg, "a red star")]))
        for l in range(cfg.num_layers):
            assert torch.equal(cond.k[l], ref.k[l]) and torch.equal(cond.v[l], ref.v[l])
        assert int(cond.start[0]) == len(pipeline.generation_ids(tok, cfg, "a red star"))


def test_replica_context_kv_with_an_image_rotates_at_the_mrope_positions(vlm, tok):
    # As test_replica_context_kv_equals_vlm_cache_when_projections_match, with an image in the prompt:
    # the replica's keys use the (t, h, w) positions of get_rope_index.
    cfg = tiny.gen_config(ctx_kv="replica")
    rep = replica_with_vlm_kv_projections(vlm, cfg)
    _, out = image_prompt(vlm, tok, cfg)
    ctx = rep.bind_context(out)
    assert torch.equal(ctx.start, out.start)
    for l in range(cfg.num_layers):
        assert torch.allclose(ctx.k[l], out.cache_k[l], atol=1e-5)
        assert torch.allclose(ctx.v[l], out.cache_v[l], atol=1e-5)


def test_generation_with_an_image_runs_and_depends_on_it(vlm, tok):
    cfg = tiny.gen_config()
    rep = tiny.make_replica(cfg, seed=1)
    ae = tiny.make_ae(1)
    proc = tiny.processor()
    other = np.random.default_rng(6).integers(0, 256, (40, 70, 3)).astype(np.uint8)
    outs = [pipeline.generate(vlm, tok, rep, ae, "a red star", seed=1, steps=3, image=im, processor=proc)[1]
            for im in (None, IMAGE, other)]
    assert all(torch.isfinite(x).all() for x in outs)
    assert (outs[0] - outs[1]).abs().max() > 1e-4 and (outs[1] - outs[2]).abs().max() > 1e-4
