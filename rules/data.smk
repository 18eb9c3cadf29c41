# Step 0: prepare the configured dataset (generate `synthetic`, or check and index a real
# one) and write the manifest every later step reads.


rule prepare_data:
    output:
        MANIFEST,
    log:
        L.log("prepare_data"),
    benchmark:
        L.benchmark("prepare_data")
    conda:
        CONDA_ENV
    threads: 1
    params:
        cfg=section_json("dataset"),
        out_dir=data_dir_param,
    script:
        "../workflow_scripts/prepare_data.py"


# Step 0b (dataset.kind synthetic, pretrain.enabled): the stand-in for ImageNet weights, a
# ResNet (pretrain.backbone; ResNet-38 at seam.width for method seam) trained on generated
# isolated objects; the sections with `pretrained: null` start from it
# (conta_core.infra.config.pretrain_targets; conta_core/steps/pretrain.py explains why and how).


rule pretrain:
    output:
        out=L.pretrain("{backbone}"),
        train_log=L.pretrain_log("{backbone}"),
    log:
        L.log("pretrain", "{backbone}"),
    benchmark:
        L.benchmark("pretrain", "{backbone}")
    conda:
        CONDA_ENV
    threads: config["threads"]
    resources:
        gpu=GPU,
    params:
        cfg=pretrain_json,
        device=config["device"],
        seed=config["seed"],
    script:
        "../workflow_scripts/pretrain.py"
