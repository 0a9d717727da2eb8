"""Config parsing and validation: every mistyped or out-of-range value is refused up front, in one line."""

import pytest

from anysat_lite.config import (
    PRESETS,
    Config,
    ConfigError,
    TrainConfig,
    UnknownKeyError,
    apply_overrides,
    get_config,
    load_config,
    model_config,
    save_config,
    validate_config,
    validate_probe,
)


@pytest.mark.parametrize(
    "override, match",
    [
        ("train.steps=abc", r"^config train.steps: expected an integer, got 'abc'; e.g. --set train.steps=300$"),
        ("train.lr=fast", r"^config train.lr: expected a number, got 'fast'; e.g. --set train.lr=0.0001$"),
        (
            "train.batch_size=-4",
            r"^config train.batch_size: expected an integer >= 1, got -4; e.g. --set train.batch_size=16$",
        ),
        ("train.ckpt_every=0", r"^config train.ckpt_every: expected an integer >= 1, got 0"),
        ("train.steps=0", r"^config train.steps: expected an integer >= 1, got 0"),
        ("train.steps=2.5", r"train.steps: expected an integer, got 2.5"),
        ("train.lr=-1e-4", r"train.lr: expected a number > 0, got -0.0001"),
        ("train.lr=nan", r"train.lr: expected a number > 0, got nan"),
        ("train.amp=fp8", r"train.amp: expected one of none, bf16, fp16, got 'fp8'; e.g. --set train.amp=none"),
        ("train.device=gpu", r"train.device: expected auto, cpu, cuda, cuda:N or mps, got 'gpu'"),
        ("train.compile=1", r"train.compile: expected a boolean \(true/false\), got 1"),
        ("train.threads=0", r"train.threads: expected null or in \[1, 1024\], got 0"),
        (
            "model.num_heads=5",
            r"model.num_heads: expected a divisor of model.embed_dim=64, got 5; e.g. --set model.num_heads=4",
        ),
        ("model.embed_dim=100", r"model.embed_dim: expected a positive multiple of 32"),
        ("jepa.predictor_heads=3", r"jepa.predictor_heads: expected a divisor of model.embed_dim=64, got 3"),
        ("jepa.target_scale=[0.9, 0.1]", r"jepa.target_scale: expected \[low, high\] with low <= high"),
        ("jepa.ema=[0.9]", r"jepa.ema: expected a pair \[a number, a number\], got \[0.9\]"),
        ("jepa.mask=blocks", r"jepa.mask: expected one of multiblock, random, block, got 'blocks'"),
        ("probe.patch_sizes=[15]", r"probe.patch_sizes: expected non-empty, each a positive multiple of 10"),
        ("probe.modality_sets=[[all], s2]", r"probe.modality_sets\[1\]: expected a list of texts, got 's2'"),
        (
            "data.datasets=[{name: synthetic, sensors: [s2x]}]",
            r"data.datasets\[0\].sensors: expected null \(all\) or "
            r"registered sensor names",
        ),
        ("data.datasets=[{name: synthetic, weight: 0}]", r"data.datasets\[0\].weight: expected a number > 0, got 0.0"),
        ("data.datasets=[{name: treesatai}]", r"data.datasets\[0\].path: dataset treesatai needs the folder"),
        ("data.datasets=[]", r"data.datasets: expected at least one dataset, got \[\]"),
        (
            "data.datasets=[{name: synthetic",
            r"^--set data.datasets=\[\{name: synthetic: not valid YAML \(expected ',' or "
            r"'\}', but got '<stream end>' \(line 1, column 18\)\); quote the whole",
        ),
        (
            "data.datasets[0].sensors=[s2]",
            r"indexing into a list is not supported; give the whole list, e.g. --set "
            r"\"data.datasets=\[\{name: synthetic, sensors: \[s2\]\}\]\"",
        ),
        (
            "data.datasets=[{name: pastis}]",
            r"data.datasets\[0\].name: expected synthetic, synthetic:<tag> or a registered "
            r"dataset \(treesatai-ts, pastis-hd, flair, planted, s2naip-urban, rasters",
        ),
        (
            "data.datasets=[{name: flair, path: x, norm: mean}]",
            r"data.datasets\[0\].norm: expected one of official, "
            r"per-tile, pixels, got 'mean'",
        ),
        (
            "data.datasets=[{name: flair, path: x, options: 3}]",
            r"data.datasets\[0\].options: expected a mapping "
            r"\{key: value\} or null, got 3",
        ),
        (
            "data.datasets=[{name: flair, path: x, tile_m: 15}]",
            r"data.datasets\[0\].tile_m: expected null \(the reader's "
            r"tiles\) or a positive multiple of 10",
        ),
        ("data.datasets=[{name: flair, path: x, batch_size: 0}]", r"data.datasets\[0\].batch_size: expected null"),
        ("data.mixing=random", r"data.mixing: expected one of weighted, official, got 'random'"),
        ("data.prefetch_factor=0", r"data.prefetch_factor: expected an integer >= 1, got 0"),
        ("model.size=huge", r"^config model.size: expected one of nano, tiny, small, base, got 'huge'"),
        ("model.ltae_in_width=6", r"model.ltae_in_width: expected null or a positive multiple of 4 .*, got 6"),
        ("train.recipe=adam", r"train.recipe: expected one of ijepa, anysat, got 'adam'"),
        (
            "train.recipe=anysat",
            r"train.val_every: the anysat recipe reduces the learning rate on plateaus of the "
            r"validation loss, so it needs a validation, got 0",
        ),
        ("train.accum_steps=0", r"train.accum_steps: expected an integer >= 1, got 0"),
        ("train.lr=.inf", r"^config train.lr: expected a number > 0, got inf; e.g. --set train.lr="),
        ("train.grad_clip=.nan", r"train.grad_clip: expected a number >= 0, got nan"),
        ("jepa.target_aspect=[0.75, .inf]", r"jepa.target_aspect: expected \[low, high\] .*, got \[0.75, \.inf\]"),
        (
            "jepa.warn_cos=.nan",
            r"jepa.warn_cos: expected in \[-1, 1\], got nan; e.g. --set jepa.warn_cos=0.95",
        ),  # NaN: no warning ever
        ("jepa.warn_std=-0.1", r"jepa.warn_std: expected a number >= 0, got -0.1"),
        ("train.keep_last=-1", r"train.keep_last: expected an integer >= 0, got -1"),
        ("train.plateau_factor=1", r"train.plateau_factor: expected in \(0, 1\), got 1.0"),
        ("jepa.contrastive_scope=world", r"jepa.contrastive_scope: expected one of global, local, got 'world'"),
        ("jepa.context=bogus", r"jepa.context: expected one of block, complement, got 'bogus'"),
        ("model.sise=nano", r"\(model.sise\); did you mean model.size\? valid: attend_over, .*, size, subpatch_order$"),
        ("probe.bootstrap=-5", r"probe.bootstrap: expected an integer >= 0, got -5"),
        (
            "data.datasets=[{name: synthetic, max_dates: 2}]",
            r"data.datasets\[0\].max_dates: the embedded world \(synthetic\) has no max_dates, expected null, got 2; "
            r"remove it \(data.n_tiles, data.tile_m and data.n_dates size the world\)$",
        ),
        ("data.datasets=[{name: 'synthetic:b', path: /x}]", r"data.datasets\[0\].path: .*\(synthetic:b\).*got '/x'"),
        ("data.datasets=[{name: synthetic, options: {a: 1}}]", r"data.datasets\[0\].options: .*got \{'a': 1\}"),
        (
            "probe.modality_sets=[[all], [foo]]",
            r"probe.modality_sets: expected non-empty lists of registered sensor names, each once \(anysat-lite info "
            r"lists them\), or \[all\], got \[\[all\], \[foo\]\]",
        ),
        ("probe.modality_sets=[[s2, s2]]", r"probe.modality_sets: .*each once .*got \[\[s2, s2\]\]"),
        ("data.datasets=[{name: synthetic, sensors: [s2, s2]}]", r"data.datasets\[0\].sensors: .*each once"),
        ("train", r"^--set 'train': expected KEY=VALUE, e.g. --set train.steps=100$"),
        ("train.steps.x=3", r"expected section.key=value with a section among model, data, jepa, train, probe"),
        ("model=3", r"expected section.key=value"),
    ],
)
def test_bad_overrides_are_refused_in_one_line(override, match):
    with pytest.raises(ConfigError, match=match) as e:
        get_config("cpu-demo", [override])
    assert "\n" not in str(e.value)


def test_unknown_keys_suggest_the_close_one():
    with pytest.raises(
        UnknownKeyError,
        match=r"unknown config key\(s\) \['stepz'\] in train .*did you mean "
        r"train.steps\?",
    ) as e:
        get_config("cpu-demo", ["train.stepz=3"])
    assert isinstance(e.value, KeyError) and not str(e.value).startswith("'")  # still a KeyError, readable
    with pytest.raises(UnknownKeyError, match=r"\['trian'\] in --set; did you mean train\?"):
        get_config("cpu-demo", ["trian.steps=3"])


def test_unknown_keys_one_level_too_high_or_without_a_space_after_the_colon(tmp_path):
    (tmp_path / "top.yaml").write_text("steps: 5\n")
    with pytest.raises(
        UnknownKeyError,
        match=r"\['steps'\] in config \(steps\); did you mean train.steps \(nested under "
        r"train\)\? valid: data, jepa",
    ):
        load_config(tmp_path / "top.yaml")
    (tmp_path / "top.yaml").write_text("seed: 5\n")
    with pytest.raises(UnknownKeyError, match=r"did you mean data.seed or train.seed or probe.seed \(nested under "):
        load_config(tmp_path / "top.yaml")
    with pytest.raises(UnknownKeyError, match=r"YAML needs a space after ':' \(name: synthetic\); valid: batch_size"):
        get_config("cpu-demo", ["data.datasets=[{name:synthetic}]"])


def test_keys_of_earlier_versions_say_what_replaced_them(tmp_path):
    """An old run's config.yaml (``--resume``) names the key that replaced each retired one."""
    with pytest.raises(UnknownKeyError, match=r"probe.linear_epochs was replaced: .*probe.linear_iters") as e:
        get_config("cpu-demo", ["probe.linear_epochs=100"])
    assert "\n" not in str(e.value)
    old = tmp_path / "config.yaml"
    old.write_text("probe:\n  linear_lr: 0.01\n")
    with pytest.raises(UnknownKeyError, match=r"probe.linear_lr was replaced: .*probe.seg_lr"):
        load_config(old)


def test_the_help_example_and_harmless_conversions_are_accepted():
    cfg = get_config(
        "cpu-demo",
        [
            "data.datasets=[{name: synthetic, sensors: [s2]}]",
            "train.lr=1e-4",
            "train.steps=1e3",
            "model.mlp_ratio=4",
            "train.threads=null",
            "jepa.target_scale=[1e-1, 0.5]",
        ],
    )
    assert cfg.data.datasets[0].sensors == ["s2"] and cfg.data.datasets[0].patch_sizes == [10, 20]
    assert cfg.train.lr == 1e-4 and cfg.train.steps == 1000 and isinstance(cfg.train.steps, int)
    assert cfg.model.mlp_ratio == 4.0 and isinstance(cfg.model.mlp_ratio, float) and cfg.train.threads is None
    assert cfg.jepa.target_scale == (0.1, 0.5)


def test_every_preset_is_valid():
    for name in PRESETS:
        assert validate_config(get_config(name)).name == name
        validate_probe(get_config(name))


@pytest.mark.parametrize(
    "overrides, match",
    [
        (
            ["probe.modality_sets=[[all], [spot]]"],
            r"^config probe.modality_sets\[1\]: expected \[all\] or sensors of the embedded world data.datasets\[0\] "
            r"\(aerial, s2, s1-asc\), got \[spot\]; e.g. --set \"probe.modality_sets=\[\[all\], \[aerial\]\]\"$",
        ),
        (
            ["data.datasets=[{name: synthetic, sensors: [s2]}]"],  # the cpu-demo probe sets keep s1-asc and aerial
            r"probe.modality_sets\[2\]: expected \[all\] or sensors of the embedded world .* \(s2\), got \[s1-asc\]",
        ),
        (
            ["data.tile_m=40", "probe.patch_sizes=[20, 30]"],
            r"^config probe.patch_sizes: expected sizes that divide the embedded world's 40 m tiles \(data.tile_m\), "
            r"got \[20, 30\]; e.g. --set probe.patch_sizes=\[20\]$",
        ),
        (
            ["data.datasets=[{name: synthetic, tile_m: 30}]"],
            r"divide the embedded world's 30 m tiles \(data.datasets\[0\].tile_m\), got \[20\]; e.g. .*=\[10\]$",
        ),
    ],
)
def test_probe_settings_the_embedded_world_cannot_take(overrides, match):
    cfg = get_config("cpu-demo", overrides)  # valid for pretraining, which does not probe
    with pytest.raises(ConfigError, match=match):
        validate_probe(cfg)
    validate_probe(get_config("cpu-demo", overrides + ["data.datasets=[{name: treesatai-ts, path: x}]"]))  # unknown


def test_programmatic_configs_are_validated_too():
    with pytest.raises(ConfigError, match=r"train.steps: expected an integer >= 1, got 0"):
        validate_config(Config(train=TrainConfig(steps=0)))
    assert apply_overrides(Config(), []) == Config()


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: get_config("cpu-demo", None), r'overrides: expected a list of "key=value" strings, got None; e.g. \['),
        (lambda: get_config("cpu-demo", {"train.steps": 3}), r"strings, got \{'train.steps': 3\}; e.g."),
        (lambda: get_config("cpu-demo", [("train.steps", 3)]), r"strings, got \('train.steps', 3\) in it; e.g."),
        (
            lambda: get_config(Config()),
            r"^get_config: expected a preset name \(cpu-demo, .*\), got a Config; to change a Config, use "
            r"apply_overrides\(cfg, \[...\]\); e.g. get_config\(\"cpu-demo\", \[\"train.steps=100\"\]\)$",
        ),
        (lambda: model_config("nano", depth=-1), r"^model_config: depth: expected an integer >= 1, got -1; e.g. "),
        (
            lambda: model_config("nano", num_heads=5),
            r"divisor of model.embed_dim=64, got 5; e.g. model_config\('nano', ",
        ),
        (lambda: model_config("nano", depht=3), r"unknown config key\(s\) \['depht'\] .*did you mean model.depth\?"),
        (lambda: model_config("nano", foo=1), r"unknown config key\(s\) \['foo'\] in model .*valid: attend_over, "),
        (lambda: model_config("nano", dropout=1.5), r"dropout: expected null or in \[0, 1\), got 1.5"),
    ],
)
def test_python_entry_points_refuse_wrong_arguments_in_one_line(call, match):
    with pytest.raises(ConfigError, match=match) as e:
        call()
    assert "\n" not in str(e.value)


def test_model_config_keeps_good_overrides():
    assert model_config("nano", depth=3, dropout=None).depth == 3
    assert get_config("cpu-demo", (o for o in ["train.steps=3"])).train.steps == 3


def test_yaml_files(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  steps: [1, 2\n  lr: 3\n")
    with pytest.raises(ConfigError, match=r"^config file .*bad.yaml: not valid YAML \(.*line \d+, column \d+\)") as e:
        load_config(bad)
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match=r"config file .*none.yaml not found; give an existing YAML file \(--config"):
        load_config(tmp_path / "none.yaml")
    with pytest.raises(ConfigError, match=r'config file tiny not found; .*tiny is a preset: get_config\("tiny"\)'):
        load_config("tiny")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match=r"expected a mapping of sections"):
        load_config(tmp_path / "list.yaml")
    (tmp_path / "steps.yaml").write_text("preset: tiny\ntrain:\n  steps: 0\n")
    with pytest.raises(ConfigError, match=r"steps.yaml: config train.steps: expected an integer >= 1, got 0"):
        load_config(tmp_path / "steps.yaml")
    (tmp_path / "preset.yaml").write_text("preset: huge\n")
    with pytest.raises(ConfigError, match=r"unknown preset 'huge'; choose one of cpu-demo"):
        load_config(tmp_path / "preset.yaml")
    (tmp_path / "twice.yaml").write_text("preset: tiny\ntrain:\n  steps: 100\n  lr: 0.001\n  steps: 10\n")
    with pytest.raises(
        ConfigError, match=r"twice.yaml: not valid YAML \(key 'steps' appears twice in one section \(line 5"
    ):
        load_config(tmp_path / "twice.yaml")  # PyYAML alone keeps the last value silently
    (tmp_path / "sections.yaml").write_text("train:\n  steps: 5\nmodel:\n  depth: 2\ntrain:\n  lr: 0.1\n")
    with pytest.raises(ConfigError, match=r"key 'train' appears twice"):
        load_config(tmp_path / "sections.yaml")


def test_model_size_sets_the_three_numbers_and_explicit_keys_win():
    cfg = get_config("geoplex", ["model.size=nano"])
    assert (cfg.model.embed_dim, cfg.model.depth, cfg.model.num_heads) == (64, 2, 4)
    cfg = get_config("cpu-demo", ["model.size=tiny", "model.depth=3"])
    assert (cfg.model.embed_dim, cfg.model.depth, cfg.model.num_heads) == (256, 3, 4)
    assert (cfg.model.ltae_heads, cfg.model.ltae_in_width) == (16, None)  # the demo's nano L-TAE does not carry over
    cfg = get_config("cpu-demo", ["model.size=nano", "model.ltae_heads=8"])
    assert (cfg.model.ltae_heads, cfg.model.ltae_in_width) == (8, None)


def test_geoplex_preset_has_the_official_numbers():
    cfg = get_config("geoplex")
    ds = {d.name: d for d in cfg.data.datasets}
    assert {n: d.patch_sizes for n, d in ds.items()} == {
        "treesatai-ts": [10, 20],
        "pastis-hd": [40, 80, 160],
        "flair": [10, 20],
        "planted": [30],
        "s2naip-urban": [40, 80, 160],
    }
    assert {n: d.batch_size for n, d in ds.items()} == {
        "treesatai-ts": 128,
        "pastis-hd": 1,
        "flair": 32,
        "planted": 256,
        "s2naip-urban": 2,
    }
    assert {n: d.weight for n, d in ds.items()} == {
        "treesatai-ts": 1,
        "pastis-hd": 1,
        "flair": 1,
        "planted": 2,
        "s2naip-urban": 4,
    }
    assert ds["pastis-hd"].max_dates == 20 and all(d.norm == "official" for d in ds.values())
    t = cfg.train
    assert (t.recipe, t.lr, t.weight_decay, t.grad_clip, t.amp, t.plateau_factor, t.plateau_patience) == (
        "anysat",
        5e-5,
        0.05,
        0.0,
        "fp16",
        0.1,
        10,
    )
    assert cfg.data.mixing == "official" and cfg.data.epoch_steps == 17952 == t.val_every
    assert cfg.jepa.contrastive_scope == "local" and cfg.model.embed_dim == 768
    # a config names a dataset and where it is
    cfg = get_config("cpu-demo", ["data.datasets=[{name: pastis-hd, path: /data/PASTIS-R}]"])
    assert cfg.data.datasets[0].path == "/data/PASTIS-R"


@pytest.mark.parametrize("raw, read", [("010", 8), ("1_000", 1000), ("[10, 020]", 16)])
def test_numbers_yaml_would_read_otherwise_are_refused(raw, read):
    """YAML 1.1 reads a leading 0 as octal and drops underscores: train.steps=010 would run 8 steps."""
    with pytest.raises(ConfigError, match=rf"the number \S+ is ambiguous .*: {read}\); write it without them"):
        get_config("cpu-demo", [f"train.steps={raw}"])
    assert get_config("cpu-demo", ["train.out_dir=runs/010", "train.steps=10"]).train.out_dir == "runs/010"
    assert get_config("cpu-demo", ["train.out_dir='010'"]).train.out_dir == "010"
    assert get_config("cpu-demo", ["train.out_dir=09"]).train.out_dir == "09"  # not octal: YAML keeps the text


def test_a_yes_for_a_text_says_to_quote_it():
    with pytest.raises(ConfigError, match=r"expected a text, got true \(YAML reads yes/no/on/off as true/false"):
        get_config("cpu-demo", ["train.out_dir=yes"])


def test_a_path_starting_with_a_tilde_is_the_home_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = get_config("cpu-demo", ["train.out_dir=~/runs/x", "data.cache_dir=~/cache", "data.root=~/data"])
    assert (cfg.train.out_dir, cfg.data.cache_dir, cfg.data.root) == tuple(
        str(tmp_path / p) for p in ("runs/x", "cache", "data")
    )


def test_unhashable_names_are_config_errors(tmp_path):
    """A list where a name is expected, and a list as a YAML key, are refused in one line (not a TypeError)."""
    for text, pattern in (
        ("preset: [tiny]\n", r"config preset: unknown preset \[tiny\]"),
        ("model: {size: [nano]}\n", r"model.size: expected one of nano, .*got \[nano\]"),
        ("? [a, b]\n: 1\n", r"a key must be a plain name, got a list"),
    ):
        (tmp_path / "c.yaml").write_text(text)
        with pytest.raises(ConfigError, match=pattern):
            load_config(tmp_path / "c.yaml")
    with pytest.raises(ConfigError, match=r"unknown model size \[nano\]; choose one of nano"):
        model_config(["nano"])
    with pytest.raises(ConfigError, match=r"unknown preset 'tinny'; did you mean 'tiny'\? choose one of cpu-demo"):
        get_config("tinny")


def test_more_target_blocks_than_the_sampler_can_place_are_refused():
    assert get_config("cpu-demo", ["jepa.n_targets=16"]).jepa.n_targets == 16
    with pytest.raises(ConfigError, match=r"jepa.n_targets: expected from 1 to 16 .*got 1000"):
        get_config("cpu-demo", ["jepa.n_targets=1000"])


def test_a_long_received_value_is_cut_in_the_message(tmp_path):
    (tmp_path / "metrics.csv").write_text("step,loss\n" + "".join(f"{i},0.5\n" for i in range(200)))
    with pytest.raises(ConfigError, match=r"expected a mapping of sections .*\.\.\. \(\d+ characters\)$") as e:
        load_config(tmp_path / "metrics.csv")
    assert len(str(e.value)) < 300


def test_the_python_entry_points_name_a_wrong_argument():
    """pretrain / run_probe given a preset name, load_config / load_encoder given None, statistics without std:
    one-line UserErrors saying what to pass instead (they were AttributeError, TypeError and KeyError)."""
    from anysat_lite.data.normalization import NormStats
    from anysat_lite.errors import UserError
    from anysat_lite.probe import run_probe
    from anysat_lite.train import load_encoder, pretrain

    for call, pattern in (
        (lambda: pretrain("tiny"), r"^pretrain: expected a Config, got str 'tiny'; e.g. pretrain\(get_config\('tiny'"),
        (lambda: run_probe(3), r"^run_probe: expected a Config, got int 3; e.g. run_probe\(get_config\('cpu-demo'\)\)"),
        (lambda: load_config(None), r"^load_config: expected the path of a YAML file, got NoneType null"),
        (lambda: load_encoder(None), r"^load_encoder: expected the path of an exported encoder or a checkpoint"),
        (lambda: NormStats.from_dict({"s2": {"mean": [1.0]}}), r"statistics of s2: expected .* std .*\['mean'\]"),
    ):
        with pytest.raises(UserError, match=pattern):
            call()


def test_min_lr_above_lr_is_refused():
    with pytest.raises(
        ConfigError,
        match=r"config train.min_lr: .* from train.lr=0.001, so expected at most 0.001, got 1; "
        r"e.g. --set train.min_lr=1e-06$",
    ):
        get_config("cpu-demo", ["train.min_lr=1"])
    assert get_config("cpu-demo", ["train.min_lr=0.001"]).train.min_lr == 0.001


def test_save_config_keeps_a_file_that_says_the_same(tmp_path):
    path = tmp_path / "config.yaml"
    cfg = get_config("cpu-demo", ["train.steps=12"])
    save_config(cfg, path)
    noted = path.read_text().replace("steps: 12", "steps: 12  # my note: twelve is enough")
    path.write_text(noted)
    save_config(cfg, path)  # a resume of the same run: the comment stays
    assert path.read_text() == noted
    save_config(get_config("cpu-demo", ["train.steps=24"]), path)  # the config changed: the file says so
    assert load_config(path).train.steps == 24 and "my note" not in path.read_text()
