# Steps 1-2 of a round: the multi-label classifier (round t > 0: with the context map
# M_t from round t-1's masks X_m and confounder set) and its class activation maps.
# train_cls and make_cam call the method's step functions (conta_core.infra.methods: irn and
# amn the IRNet classifier and CAMs, seam SEAM and its PCM CAMs) with its --cfg objects
# (RULE_JSON, conta_core.infra.rule_configs); the output paths are the same for every method.


rule train_cls:
    input:
        pretrained=pretrain_input(METHOD.cls_section),
        manifest=MANIFEST,
        xm_dir=xm_of,
        confounder=confounder_of,
    output:
        out=L.model("{t}", "cls"),
        train_log=L.train_log("{t}", "cls"),
    log:
        L.log("train_cls", "round{t}"),
    benchmark:
        L.benchmark("train_cls", "round{t}")
    conda:
        CONDA_ENV
    threads: config["threads"]
    resources:
        gpu=GPU,
    params:
        cfg=RULE_JSON["train_cls"],
        split="train",
        device=config["device"],
        seed=round_seed,
        loader_workers=config["loader_workers"],
    script:
        "../workflow_scripts/train_cls.py"


rule make_cam:
    input:
        manifest=MANIFEST,
        model=L.model("{t}", "cls"),
        xm_dir=xm_of,
    output:
        out_dir=directory(L.shard_dir("{t}", "cam", "{shard}")),
    log:
        L.log("make_cam", "round{t}_{shard}"),
    benchmark:
        L.benchmark("make_cam", "round{t}_{shard}")
    conda:
        CONDA_ENV
    threads: config["threads"]
    resources:
        gpu=GPU,
    params:
        cfg=RULE_JSON["make_cam"],
        split="train",
        num_shards=len(SHARDS),
        device=config["device"],
    script:
        "../workflow_scripts/make_cam.py"


rule eval_cam:
    input:
        manifest=MANIFEST,
        cams_dir=cams_of,
    output:
        out=L.eval_csv("{t}", "cam"),
    log:
        L.log("eval_cam", "round{t}"),
    benchmark:
        L.benchmark("eval_cam", "round{t}")
    conda:
        CONDA_ENV
    threads: 1
    params:
        cfg=section_json("cam"),
        split="train_eval",
    script:
        "../workflow_scripts/eval_cam.py"


rule context_diagnostics:
    input:
        manifest=MANIFEST,
        model=L.model("{t}", "cls"),
        train_log=L.train_log("{t}", "cls"),
        xm_dir=xm_of,
    output:
        out=L.diagnostics("{t}"),
    log:
        L.log("context_diagnostics", "round{t}"),
    benchmark:
        L.benchmark("context_diagnostics", "round{t}")
    conda:
        CONDA_ENV
    threads: config["threads"]
    resources:
        gpu=GPU,
    params:
        cfg=json.dumps({"diagnostics_images": config["context"]["diagnostics_images"]}),
        split="train_eval",
        device=config["device"],
    script:
        "../workflow_scripts/context_diagnostics.py"
