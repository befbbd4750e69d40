"""scikit-learn -> ONNX / TFLite compiler with an accuracy gate and manifest fragments."""
