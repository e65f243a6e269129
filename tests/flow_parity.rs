//! The replica, the schedule and the samplers against the PyTorch reference
//! (tools/reference/{replica,sampler}.py via tests/fixtures/reference/{base,alt,no_tcra}), with the
//! fixture's own prompt K/V fed in: every switch combination (ctx_kv, img_pos, tcra pre/post/none,
//! shared/per-group ends, time_shift, boundaries, Euler/Heun, dense).
//!
//! Tolerances: the fixtures are f32 computed by PyTorch on one thread; we compute in f32 with other
//! reduction orders (blocked dot products, another softmax and RMSNorm summation), so values differ
//! by a few ulps per operation. Errors are measured as max |ours − reference| / max(1, max |reference|)
//! per tensor (`LATTE_PRINT_ERRORS=1` prints them): the largest over all configs was 4.5e-6 (a
//! guided velocity; guidance multiplies the conditional-unconditional difference by s = 3). We allow
//! 2e-5 for hidden states, TCRA blocks and velocities and 4e-5 for final latents, which add up
//! several steps: about 5x headroom over the measured, far below any real mistake (a wrong switch,
//! gate or position moves these tensors by 1e-2 or more).

use latte::model::flow::{LayerTrace, PromptKv, Replica};
use latte::model::ModelFile;
use latte::pipeline::prompt_context::{bind, VlmPromptOutputs};
use latte::pipeline::{sample, Evaluation, Pass, SamplerKind, SamplingObserver, SamplingOptions};
use latte::schedule::TimestepSchedule;

mod reference_support;
use reference_support::{assert_close, convert, Oracle, CONFIGS};

const HIDDEN_TOLERANCE: f32 = 2e-5;
const VELOCITY_TOLERANCE: f32 = 2e-5;
const LATENT_TOLERANCE: f32 = 4e-5;

fn fixture_prompt(fixture: &Oracle, replica: &Replica<'_>, which: &str) -> PromptKv {
    let layers = replica.config().layer_count;
    let mut keys = Vec::new();
    let mut values = Vec::new();
    let mut len = 0;
    for l in 0..layers {
        let (p, k) = fixture.heads_to_tokens(&format!("gen.{which}.k.{l}"));
        let (_, v) = fixture.heads_to_tokens(&format!("gen.{which}.v.{l}"));
        len = p;
        keys.push(k);
        values.push(v);
    }
    // Text prompts: the image tokens start right after the prompt.
    PromptKv::new(replica.config(), len, len, keys, values).unwrap()
}

/// Records what the sampler reports and checks it against the fixture as it goes.
struct Checker<'f> {
    fixture: &'f Oracle,
    config: &'static str,
    evaluations: usize,
    layers_checked: usize,
}

impl SamplingObserver for Checker<'_> {
    fn evaluation(&mut self, e: &Evaluation<'_>) {
        let f = self.fixture;
        let at = |name: &str| format!("gen.eval{}.{name}", e.index);
        let what = |name: &str| format!("{}: eval {} {name}", self.config, e.index);
        assert_eq!(f.f32(&at("t"))[0], e.t as f32, "{}", what("t"));
        assert_eq!(f.i64(&at("group"))[0], e.group as i64, "{}", what("group"));
        assert_close(
            &what("v_cond"),
            e.v_cond,
            &f.f32(&at("v_cond")),
            VELOCITY_TOLERANCE,
        );
        assert_close(
            &what("v_uncond"),
            e.v_uncond.unwrap(),
            &f.f32(&at("v_uncond")),
            VELOCITY_TOLERANCE,
        );
        assert_close(&what("v"), e.v, &f.f32(&at("v")), VELOCITY_TOLERANCE);
        self.evaluations += 1;
    }

    fn wants_layers(&self, evaluation: usize) -> bool {
        (0..8).any(|l| {
            self.fixture
                .has(&format!("gen.eval{evaluation}.cond.hidden.{l}"))
        })
    }

    fn layer(&mut self, evaluation: usize, pass: Pass, trace: LayerTrace<'_>) {
        if pass != Pass::Conditional {
            return;
        }
        let f = self.fixture;
        let at = |name: &str| format!("gen.eval{evaluation}.cond.{name}.{}", trace.layer);
        let what = |name: &str| {
            format!(
                "{}: eval {evaluation} layer {} {name}",
                self.config, trace.layer
            )
        };
        assert_close(
            &what("hidden"),
            trace.hidden,
            &f.f32(&at("hidden")),
            HIDDEN_TOLERANCE,
        );
        match trace.block {
            Some(block) => assert_close(
                &what("block"),
                block,
                &f.f32(&at("block")),
                HIDDEN_TOLERANCE,
            ),
            None => assert!(!f.has(&at("block")), "{}", what("block missing")),
        }
        self.layers_checked += 1;
    }
}

fn options(fixture_sampler: &str, guidance: f32, dense: bool) -> SamplingOptions {
    SamplingOptions {
        sampler: match fixture_sampler {
            "euler" => SamplerKind::Euler,
            "heun" => SamplerKind::Heun,
            other => panic!("sampler {other}"),
        },
        guidance,
        dense,
    }
}

fn manifest(config: &str) -> serde_json::Value {
    let text =
        std::fs::read_to_string(reference_support::fixture_dir(config).join("manifest.json"))
            .unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn sampling_matches_the_reference_with_fixture_prompt_kv() {
    let tmp = tempfile::tempdir().unwrap();
    for &config in CONFIGS {
        let fixture = Oracle::open(config);
        let m = manifest(config);
        let file = ModelFile::open(convert(config, "f32", tmp.path())).unwrap();
        let replica = Replica::load(&file).unwrap();
        let c = replica.config();
        let steps = m["steps"].as_u64().unwrap() as usize;
        let guidance = m["guidance_scale"].as_f64().unwrap() as f32;
        let schedule = TimestepSchedule::new(steps, c.time_shift, &c.group_boundaries).unwrap();
        let want_times = fixture.f32("gen.timesteps");
        let times: Vec<f32> = schedule.times().iter().map(|&t| t as f32).collect();
        assert_eq!(times, want_times, "{config}: timesteps");

        // The noise RNG is bit-exact with the reference.
        let seed = fixture.i64("gen.seed")[0] as u64;
        let mut noise = vec![0.0; c.latent_len()];
        latte::rng::fill_normal(seed, &mut noise);
        assert_eq!(noise, fixture.f32("gen.noise"), "{config}: noise");

        let cond = fixture_prompt(&fixture, &replica, "cond");
        let uncond = fixture_prompt(&fixture, &replica, "uncond");
        let mut checker = Checker {
            fixture: &fixture,
            config,
            evaluations: 0,
            layers_checked: 0,
        };
        let sampler = m["sampler"].as_str().unwrap();
        let latent = sample(
            &replica,
            &schedule,
            &noise,
            &cond,
            Some(&uncond),
            &options(sampler, guidance, false),
            &mut checker,
        )
        .unwrap();
        let per_step = if sampler == "heun" { 2 } else { 1 };
        assert_eq!(checker.evaluations, steps * per_step, "{config}");
        // First evaluation of each group: every layer of the group was checked.
        assert_eq!(checker.layers_checked, c.layer_count, "{config}");
        assert_close(
            &format!("{config}: final latent"),
            &latent,
            &fixture.f32("gen.final_latent"),
            LATENT_TOLERANCE,
        );

        if fixture.has("dense.final_latent") {
            let dense = sample(
                &replica,
                &schedule,
                &noise,
                &cond,
                Some(&uncond),
                &options(sampler, guidance, true),
                &mut latte::pipeline::sampler::Silent,
            )
            .unwrap();
            assert_close(
                &format!("{config}: dense final latent"),
                &dense,
                &fixture.f32("dense.final_latent"),
                LATENT_TOLERANCE,
            );
        }
    }
}

/// ctx_kv = replica: the replica's own k/v projections of the VLM's normed layer inputs give the
/// fixture's prompt K/V.
#[test]
fn replica_context_kv_matches_the_reference() {
    let tmp = tempfile::tempdir().unwrap();
    let fixture = Oracle::open("alt");
    let file = ModelFile::open(convert("alt", "f32", tmp.path())).unwrap();
    let replica = Replica::load(&file).unwrap();
    let c = replica.config();
    for which in ["cond", "uncond"] {
        let normed_inputs: Vec<Vec<f32>> = (0..c.layer_count)
            .map(|l| fixture.f32(&format!("gen.{which}.normed_input.{l}")))
            .collect();
        let len = fixture.shape(&format!("gen.{which}.normed_input.0"))[0];
        let bound = bind(
            &replica,
            VlmPromptOutputs {
                positions: (0..len as u32).map(|p| [p; 3]).collect(),
                next_position: len,
                cache_keys: Vec::new(),
                cache_values: Vec::new(),
                normed_inputs,
            },
        )
        .unwrap();
        let want = fixture_prompt(&fixture, &replica, which);
        for l in 0..c.layer_count {
            let (got, want) = (bound.layer(l), want.layer(l));
            assert_close(
                &format!("{which} keys {l}"),
                got.keys.host(),
                want.keys.host(),
                1e-5,
            );
            assert_close(
                &format!("{which} values {l}"),
                got.values.host(),
                want.values.host(),
                1e-5,
            );
        }
    }
}

/// The guidance passes run as one batch of rows (each weight read once per evaluation): that
/// batch gives each pass exactly the velocity and layer outputs it gets alone, bit for bit, in
/// f32 and in the quantized types (their activations round per row, and every output element sums
/// over the same blocks in the same order whatever the number of rows).
#[test]
fn one_batch_of_passes_equals_each_pass_alone() {
    use latte::model::flow::{ReplicaScratch, StepConditioning};
    let tmp = tempfile::tempdir().unwrap();
    for &config in CONFIGS {
        let fixture = Oracle::open(config);
        for ty in ["f32", "q8_0", "q4_0"] {
            let file = ModelFile::open(convert(config, ty, tmp.path())).unwrap();
            let replica = Replica::load(&file).unwrap();
            let c = replica.config();
            let len = c.latent_len();
            let cond = fixture_prompt(&fixture, &replica, "cond");
            let uncond = fixture_prompt(&fixture, &replica, "uncond");
            let mut latent = vec![0.0; len];
            latte::rng::fill_normal(7, &mut latent);
            let mut conditioning = StepConditioning::default();
            let mut scratch = ReplicaScratch::default();
            for group in 0..c.group_count {
                replica
                    .condition(
                        0.3,
                        group,
                        c.layers_of(group),
                        &mut conditioning,
                        &mut scratch,
                    )
                    .unwrap();
                let mut run = |prompts: &[&PromptKv], traces: &mut Vec<(usize, Vec<f32>)>| {
                    let mut velocity = vec![0.0; prompts.len() * len];
                    let mut record = |t: LayerTrace<'_>| {
                        let mut values = t.hidden.to_vec();
                        values.extend(t.block.unwrap_or_default());
                        traces.push((t.pass, values));
                    };
                    replica
                        .velocity(
                            &latent,
                            &conditioning,
                            prompts,
                            &mut velocity,
                            &mut scratch,
                            Some(&mut record),
                        )
                        .unwrap();
                    velocity
                };
                let (mut batch_traces, mut cond_traces, mut uncond_traces) =
                    (Vec::new(), Vec::new(), Vec::new());
                let batch = run(&[&cond, &uncond], &mut batch_traces);
                let alone_cond = run(&[&cond], &mut cond_traces);
                let alone_uncond = run(&[&uncond], &mut uncond_traces);
                let what = format!("{config} {ty} group {group}");
                assert!(
                    batch[..len] == alone_cond[..],
                    "{what}: conditional velocity"
                );
                assert!(
                    batch[len..] == alone_uncond[..],
                    "{what}: unconditional velocity"
                );
                let of_pass = |pass: usize| -> Vec<&Vec<f32>> {
                    batch_traces
                        .iter()
                        .filter(|(p, _)| *p == pass)
                        .map(|(_, v)| v)
                        .collect()
                };
                assert_eq!(of_pass(0).len(), c.layers_of(group).len(), "{what}");
                assert!(
                    of_pass(0) == alone(&cond_traces),
                    "{what}: conditional layers"
                );
                assert!(
                    of_pass(1) == alone(&uncond_traces),
                    "{what}: unconditional layers"
                );
            }
        }
    }
}

fn alone(traces: &[(usize, Vec<f32>)]) -> Vec<&Vec<f32>> {
    traces.iter().map(|(_, v)| v).collect()
}
