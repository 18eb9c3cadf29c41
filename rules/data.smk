# Step 0: prepare the configured dataset (generate `synthetic`, or check and index a real
# one) and write the manifest every later step reads.


rule prepare_data:
    output:
        manifest=MANIFEST,
    params:
        py=PY,
        script=script("prepare_data.py"),
        cfg=section_json("dataset"),
        out_dir=lambda w, output: os.path.dirname(output.manifest),
    log:
        f"{R}/logs/prepare_data.log",
    benchmark:
        f"{R}/benchmarks/prepare_data.tsv"
    threads: 1
    conda:
        CONDA_ENV
    shell:
        "{params.py} {params.script} --cfg {params.cfg:q} --out-dir {params.out_dir} > {log} 2>&1"


# Step 0b (dataset.kind synthetic, pretrain.enabled): the stand-in for ImageNet weights, a
# ResNet trained on generated isolated objects; the classifier and segmentation sections with
# `pretrained: null` start from it (conta_core/pretrain.py explains why and how).
rule pretrain:
    output:
        weights=f"{R}/pretrain/{{backbone}}.pth",
        log_csv=f"{R}/pretrain/{{backbone}}_train_log.csv",
    params:
        py=PY,
        script=script("pretrain.py"),
        cfg=section_json("pretrain") if "pretrain" in config else "{}",
        device=config["device"],
        seed=config["seed"],
    log:
        f"{R}/logs/pretrain/{{backbone}}.log",
    benchmark:
        f"{R}/benchmarks/pretrain/{{backbone}}.tsv"
    threads: config["threads"]
    resources:
        gpu=GPU,
    conda:
        CONDA_ENV
    shell:
        "{params.py} {params.script} --cfg {params.cfg:q} --out {output.weights} --log {output.log_csv}"
        " --device {params.device} --threads {threads} --seed {params.seed} > {log} 2>&1"
