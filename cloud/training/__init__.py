"""Training: the pipeline that loads a dataset, trains and evaluates an estimator, compiles it for the
devices, signs the manifest and registers the model version with its run and dataset (`pipeline`)."""
