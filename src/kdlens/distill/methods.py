"""The method table: default objective weights, their source, and citations.

Each entry gives the weights :func:`kdlens.distill.build_objective` uses for a
method alone (γ for CE, α for a logit loss, β for a hint loss); hyper-parameter
defaults are read from the loss's constructor, where they are documented next to
the formula, so that there is one place for each number.

Weights are RepDistiller's CIFAR-100 settings (Tian, Krishnan & Isola 2020,
*Contrastive Representation Distillation*, ICLR, and its released benchmark)
unless the entry says otherwise.
"""

from __future__ import annotations

import inspect
import sys
from dataclasses import dataclass
from typing import Any

from kdlens.distill.losses import LOSSES
from kdlens.errors import unknown_name

REPDISTILLER = "RepDistiller CIFAR-100 settings (Tian et al. 2020)"


@dataclass(frozen=True)
class MethodSpec:
    """Defaults and provenance of one distillation method."""

    name: str
    citation: str
    gamma: float = 1.0
    alpha: float = 0.0
    beta: float = 0.0
    source: str = REPDISTILLER
    #: where the loss's hyper-parameter defaults (its constructor's) come from
    hyper_source: str = ""
    #: training phases, in words, for the training loop and ``kdlens methods``
    phases: str = "main"
    notes: str = ""


METHODS: dict[str, MethodSpec] = {
    s.name: s
    for s in [
        # response-based
        MethodSpec("kd", "Hinton, Vinyals & Dean 2015, Distilling the Knowledge in a Neural Network",
                   gamma=0.1, alpha=0.9,
                   hyper_source="T = 4: RepDistiller"),
        MethodSpec("ls", "Szegedy et al. 2016, Rethinking the Inception Architecture (§7); "
                   "Vats 2021, Response-based knowledge distillation (LS as no-similarity KD)",
                   gamma=0.0, alpha=1.0, source="kdlens: LS replaces CE (α_LS = 0.1, Szegedy et al. 2016)",
                   hyper_source="α_LS = 0.1: Szegedy et al. 2016"),
        MethodSpec("skd", "Guo et al. 2020, Reducing the Teacher-Student Gap via Spherical Knowledge Distillation",
                   gamma=0.1, alpha=0.9, source="kdlens: KD's weights and T (SKD is robust to T per the paper)",
                   hyper_source="form=paper per the paper; form=code multiplier = 2 per the authors' code; T = 4 as KD"),
        MethodSpec("wsl", "Zhou et al. 2021, Rethinking Soft Labels for Knowledge Distillation: "
                   "A Bias-Variance Tradeoff Perspective (ICLR)",
                   gamma=1.0, alpha=2.5, source="paper's ImageNet setting (T = 2, α = 2.5)",
                   hyper_source="T = 2: paper (ImageNet)"),
        MethodSpec("dkd", "Zhao et al. 2022, Decoupled Knowledge Distillation (CVPR)",
                   gamma=1.0, alpha=1.0, source="paper's CIFAR-100 setting (α_TCKD = 1, β_NCKD = 8, T = 4)",
                   notes="the paper warms the DKD term up linearly over 20 epochs (loop's job)",
                   hyper_source="T = 4, α_TCKD = 1, β_NCKD = 8: paper (CIFAR-100)"),
        MethodSpec("noisy_kd", "Vats 2021, Response-based knowledge distillation, §4.8 (noise in soft labels)",
                   gamma=0.1, alpha=0.9, source="kdlens: KD's weights; noise scale 0.1 is a kdlens default",
                   hyper_source="T = 4 as KD; uniform noise, scale 0.1, seed 0: kdlens defaults"),
        # feature / relation based
        MethodSpec("fitnet", "Romero et al. 2015, FitNets: Hints for Thin Deep Nets (ICLR)", beta=100.0,
                   source=REPDISTILLER + "; β tuned for regressor=repdistiller (conv-BN-ReLU)",
                   phases="two_stage=False: main only (RepDistiller); two_stage=True: stage 1 hint training "
                   "of the student up to the guided layer + regressor (pretrain_loss), stage 2 KD",
                   notes="default regressor=plain (the paper's), with which β = 100 diverged here "
                   "(resnet56 → resnet8, Fashion-MNIST; the hint study uses β = 10); "
                   "regressor_bn=true alone is not RepDistiller's regressor (no ReLU)",
                   hyper_source="regressor=plain per paper §2.2, regressor=repdistiller: RepDistiller's ConvReg; "
                   "one stage as RepDistiller"),
        MethodSpec("at", "Zagoruyko & Komodakis 2017, Paying More Attention to Attention (ICLR)", beta=1000.0,
                   notes="the loss includes the paper's 1/2 (β/2); RepDistiller's β = 1000 omits it, "
                   "i.e. equals β = 2000 here",
                   hyper_source="p = 2: paper; form=code: the authors' code"),
        MethodSpec("vid", "Ahn et al. 2019, Variational Information Distillation for Knowledge Transfer (CVPR)",
                   beta=1.0, source=REPDISTILLER + "; β tuned for form=repdistiller",
                   hyper_source="1×1-conv mean regressor (form=repdistiller: no bias, as RepDistiller / the "
                   "authors' code; form=paper: with bias); init_var = 5, ε = 1e-5 from common code"),
        MethodSpec("sp", "Tung & Mori 2019, Similarity-Preserving Knowledge Distillation (ICCV)", beta=3000.0,
                   hyper_source="no hyper-parameters"),
        MethodSpec("cc", "Peng et al. 2019, Correlation Congruence for Knowledge Distillation (ICCV)", beta=0.02,
                   source=REPDISTILLER + "; β tuned for form=repdistiller",
                   notes="form=repdistiller (default) is RepDistiller's own CC: linear embeddings to 128 dims, "
                   "products of consecutive samples' differences; β is untuned for form=paper (kernel form)",
                   hyper_source="form=paper: Gaussian RBF, P = 2, γ = 0.4 (kdlens defaults for the paper's "
                   "kernel form); form=repdistiller: embed_dim = 128 (RepDistiller's feat_dim)"),
        MethodSpec("rkd", "Park, Kim, Lu & Cho 2019, Relational Knowledge Distillation (CVPR)", beta=1.0,
                   notes="distance and angle weights 25 / 50 inside the loss",
                   hyper_source="w_D = 25, w_A = 50: paper / RepDistiller"),
        MethodSpec("pkt", "Passalis & Tefas 2018, Learning Deep Representations with Probabilistic "
                   "Knowledge Transfer (ECCV)", beta=30000.0,
                   source=REPDISTILLER + "; β tuned for form=repdistiller (batch 64)",
                   notes="form=paper (i ≠ j, mean over B(B−1)) is 1.46× form=repdistiller at B = 8, "
                   "1.05× at B = 64",
                   hyper_source="cosine kernel: paper; form=repdistiller: RepDistiller / the authors' code"),
        MethodSpec("nst", "Huang & Wang 2017, Like What You Like: Knowledge Distill via Neuron Selectivity "
                   "Transfer (arXiv:1707.01219)", beta=50.0,
                   notes="the loss includes the paper's λ/2; RepDistiller's β = 50 omits the 1/2",
                   hyper_source="polynomial kernel d = 2, c = 0: paper"),
        MethodSpec("ab", "Heo, Lee, Yun & Choi 2019, Knowledge Transfer via Distillation of Activation "
                   "Boundaries Formed by Hidden Neurons (AAAI)", beta=1.0,
                   source=REPDISTILLER + "; β weights the pre-training loss, tuned for form=repdistiller",
                   phases="pretraining: student + connectors minimise β·(AB loss) (RepDistiller: 30 epochs, "
                   "main learning rate, no β, i.e. β = 1 with form=repdistiller); "
                   "main: CE (+ logit loss); the paper drops the AB term (active_in_main_phase=False)",
                   notes="form=repdistiller weights pair i of n by 3/1000·2^(i−n+1) and has no connector for "
                   "equal shapes; form=paper (weights 1) was 515–561× larger on the same tensors (3 pairs)",
                   hyper_source="margin μ = 1, 1×1 conv + BN connector: paper; form=repdistiller: RepDistiller"),
        MethodSpec("ft", "Kim, Park & Kwak 2018, Paraphrasing Complex Network: Network Compression via "
                   "Factor Transfer (NeurIPS)", beta=200.0,
                   source=REPDISTILLER + "; β tuned for form=repdistiller",
                   phases="pretraining: paraphraser on teacher features (reconstruction); "
                   "main: student + translator with the FT loss",
                   notes="form=repdistiller (default) compares attention maps of the factors "
                   "(normalised channel mean of squares) and its paraphraser has no BN; form=code (the authors' "
                   "code, their β = 500 on CIFAR-10) is 0.3–0.65× of it on the same tensors",
                   hyper_source="paraphrase rate k = 0.5, p = 1: paper; form=code: the authors' code; "
                   "form=repdistiller: RepDistiller"),
        MethodSpec("fsp", "Yim, Joo, Bae & Kim 2017, A Gift from Knowledge Distillation (CVPR)", beta=50.0,
                   phases="pretraining: student minimises the FSP loss; main: CE only "
                   "(active_in_main_phase=False)",
                   hyper_source="no hyper-parameters"),
        MethodSpec("crd", "Tian, Krishnan & Isola 2020, Contrastive Representation Distillation (ICLR)",
                   beta=0.8, notes="RepDistiller's CRD+KD used γ = 1, α = 1, β = 0.8",
                   hyper_source="embed 128, K = 16384, τ = 0.07, momentum 0.5: paper"),
        # methods of mdistiller / torchdistill and AFD (issue 16)
        MethodSpec("dist", "Huang, You, Wang, Qian & Xu 2022, Knowledge Distillation from A Stronger Teacher "
                   "(NeurIPS)", gamma=1.0, alpha=2.0,
                   source="authors' configs (hunto/image_classification_sota): CE 1, DIST 2 (ImageNet and CIFAR-100)",
                   notes="their CIFAR-100 runs use τ = 4 (T=4)",
                   hyper_source="τ = 1, β_inter = γ_intra = 1: the authors' DIST module (ImageNet)"),
        MethodSpec("lskd", "Sun, Ren, Li, Wang & Cao 2024, Logit Standardization in Knowledge Distillation (CVPR)",
                   gamma=0.1, alpha=9.0,
                   source="authors' CIFAR-100 KD setting (sunshangquan/logit-standardization-KD): CE 0.1, KD 9; "
                   "tuned for form=code",
                   hyper_source="base temperature T = 2, form=code (unbiased σ + 1e-7): the authors' code; "
                   "form=paper: σ with 1/K"),
        MethodSpec("afd", "Ji, Heo & Park 2021, Show, Attend and Distill: Knowledge Distillation via "
                   "Attention-based Feature Matching (AAAI)", beta=200.0,
                   source="authors' code (clovaai/attention-feature-distillation): CE 1 + 0.9·KD (T = 4) + 200·AFD",
                   notes="each teacher layer attends over all student layers given: all blocks (all pairs) or "
                   "the hint points (PURSUhInT Table 4) via hints / student_hints; for afd+kd the authors used "
                   "γ = 1, α = 0.9 (kdlens takes KD's 0.1 / 0.9 unless overridden)",
                   hyper_source="qk_dim = 128, Xavier-normal positional embeddings: the authors' code"),
        MethodSpec("reviewkd", "Chen, Liu, Zhao & Jia 2021, Distilling Knowledge via Knowledge Review (CVPR)",
                   beta=1.0,
                   source="authors' train.py default (dvlab-research/ReviewKD); their scripts: 5 for "
                   "resnet32x4 → resnet8x4 and WRNs, 0.6 for resnet56 → resnet20",
                   notes="warmed up linearly over the first 20/240 of the epochs, as the authors do; layers: student stage outputs + penultimate, teacher .preact stage outputs + penultimate",
                   hyper_source="ABF (mid channels min(512, C), kaiming-uniform a = 1) and HCL pyramid 4/2/1 with "
                   "weights 1, 1/2, 1/4, 1/8: the authors' code"),
        MethodSpec("ofd", "Heo, Kim, Yun, Park, Kwak & Choi 2019, A Comprehensive Overhaul of Feature "
                   "Distillation (ICCV)", beta=0.001,
                   source="authors' CIFAR-100 code (clovaai/overhaul-distillation): summed partial L2 / batch / "
                   "1000; mdistiller FEAT_WEIGHT 0.001",
                   notes="pre-ReLU (.preact) taps; margins estimated from the teacher's first batch "
                   "(the paper: from its BN, see set_margins / margins_from_batchnorm)",
                   hyper_source="1×1 conv + BN connector, layer weights 2^-(n-i), margin −3σ cut at Φ ≤ 0.001: "
                   "the authors' code"),
        MethodSpec("kdsvd", "Lee, Kim & Song 2018, Self-supervised Knowledge Distillation Using Singular Value "
                   "Decomposition (ECCV)", beta=1.0,
                   source="mdistiller CIFAR-100 setting (FEAT_WEIGHT 1, graph sum / batch)",
                   notes="form=paper: HW × C matrices (1×1 connector where channels differ); form=mdistiller: "
                   "mdistiller's (C·H) × W reshape",
                   hyper_source="k = 1 (student k + 3), RBF exp(−d²/8): the authors' TensorFlow code"),
    ]
}


def method_spec(name: str) -> MethodSpec:
    """The table entry of a registered loss (KdlensError with close matches if unknown)."""
    LOSSES.get(name)
    try:
        return METHODS[name]
    except KeyError:
        raise unknown_name("method", name, METHODS) from None


def default_hyperparameters(name: str) -> dict[str, Any]:
    """Constructor defaults of a loss (shapes and required arguments excluded)."""
    params = inspect.signature(LOSSES.get(name).__init__).parameters
    return {
        p.name: p.default
        for p in params.values()
        if p.name not in ("self", "student_shapes", "teacher_shapes") and p.default is not inspect.Parameter.empty
    }


def required_hyperparameters(name: str) -> list[str]:
    """Constructor arguments without a default (e.g. CRD's ``n_data``)."""
    params = inspect.signature(LOSSES.get(name).__init__).parameters
    return [
        p.name
        for p in params.values()
        if p.name not in ("self", "student_shapes", "teacher_shapes")
        and p.default is inspect.Parameter.empty
        and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]


def _summary(cls: type) -> str:
    """The one-line docstring of the loss's module, e.g. "Attention transfer (Zagoruyko & Komodakis 2017)."""
    doc = sys.modules[cls.__module__].__doc__ or cls.__doc__ or cls.__name__
    return doc.strip().splitlines()[0]


def describe_methods() -> list[dict[str, Any]]:
    """One dict per registered method, sorted by name (for ``kdlens methods``)."""
    rows = []
    for name in LOSSES.names():
        spec = method_spec(name)
        cls = LOSSES.get(name)
        rows.append(
            {
                "name": name,
                "kind": cls.kind,
                "gamma": spec.gamma,
                "alpha": spec.alpha,
                "beta": spec.beta,
                "hyper": default_hyperparameters(name),
                "required": required_hyperparameters(name),
                "source": spec.source,
                "hyper_source": spec.hyper_source,
                "citation": spec.citation,
                "phases": spec.phases,
                "notes": spec.notes,
                "summary": _summary(cls),
            }
        )
    return rows
