"""scikit-learn -> ONNX / TFLite compiler with an accuracy gate and manifest fragments.

    compile_estimator(estimator, X, y, target="onnx", quantize="auto", reference_X=None, gate=None)
        -> CompileResult(artifacts=[BuiltArtifact(artifact, data)], fragment=pb.Manifest, report)

Families: linear models, MLPs, tree ensembles (HistGradientBoosting with categorical features too), SVMs,
k-NN and naive Bayes (through skl2onnx), behind Pipelines of scalers, SimpleImputer, OneHotEncoder,
OrdinalEncoder, elementwise FunctionTransformers and ColumnTransformers (README: "What the compiler
takes"). Targets: ONNX (fp32, INT8) for onnxruntime, TFLite (fp32, INT8) for linear models and MLPs
without an OrdinalEncoder. See protocols/MANIFEST.md for the fragment.
"""

from model_compiler.compiler import BuiltArtifact, CompileResult, compile_estimator
from model_compiler.errors import BadInputError, CompileError, GateRefusedError, UnsupportedModelError
from model_compiler.gate import Gate
from model_compiler.loading import load_data, load_estimator
from model_compiler.report import CandidateReport, CompileReport

__all__ = [
    "BadInputError",
    "BuiltArtifact",
    "CandidateReport",
    "CompileError",
    "CompileReport",
    "CompileResult",
    "Gate",
    "GateRefusedError",
    "UnsupportedModelError",
    "compile_estimator",
    "load_data",
    "load_estimator",
]
