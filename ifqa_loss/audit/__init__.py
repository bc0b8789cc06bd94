"""``ifqa audit``: does minimising a loss make faces better, or does it fool the discriminator?

The package's parts:

- :mod:`.measures`: the audit itself (the degradations, settings A/B/C, the measures, the verdict);
- :mod:`.restorer`: the small restorer and the paired fine-tuning of setting C;
- :mod:`.identity`: the optional identity distance (dlib face embeddings);
- :mod:`.report`: the table, the picture grid and the JSON of a finished audit.

The ``ifqa audit`` command line (faces, options, output files) is :mod:`ifqa_loss.cli.audit`.

The names importable from ``ifqa_loss.audit`` before it became a package are re-exported here.
"""

from .measures import (
    DEGRADATIONS,
    DIRECTION_MIN_GAP,
    MAX_PSNR_DROP,
    MAX_REALER_THAN_REAL,
    MIN_AUDIT_SIZE,
    SETTINGS,
    AuditDegradation,
    AuditOptions,
    Cases,
    box_fidelity,
    degradation_label,
    descent_direction,
    gradient_magnitude,
    make_cases,
    measure,
    optimise_pixels,
    prepare_faces,
    psnr_ssim,
    quantize_t,
    restorer_outputs,
    run_audit,
    summarise,
    verdict,
)
from .restorer import TinyRestorer, fine_tune_pair, train_l1

__all__ = [
    "DEGRADATIONS",
    "DIRECTION_MIN_GAP",
    "MAX_PSNR_DROP",
    "MAX_REALER_THAN_REAL",
    "MIN_AUDIT_SIZE",
    "SETTINGS",
    "AuditDegradation",
    "AuditOptions",
    "Cases",
    "TinyRestorer",
    "box_fidelity",
    "degradation_label",
    "descent_direction",
    "fine_tune_pair",
    "gradient_magnitude",
    "make_cases",
    "measure",
    "optimise_pixels",
    "prepare_faces",
    "psnr_ssim",
    "quantize_t",
    "restorer_outputs",
    "run_audit",
    "summarise",
    "train_l1",
    "verdict",
]
