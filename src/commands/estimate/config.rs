//! `estimate`'s one validation point: its arguments become an [`EstimateConfig`] here, once
//! (ripgrep's parse-then-convert pattern); the library trusts the result. What depends on the
//! data — the gradient table a model needs — is [`EstimateConfig::check_gradients`], called
//! once the table is read.

use super::args::{EstimateArgs, ModelChoice, OrderChoice};
use crate::cli::{FitMethodChoice, FoldsChoice, TransformChoice};
use nifreeze::estimate::{EstimateConfig, Order, Target};
use nifreeze::model::{FitMethod, FoldFit, ModelKind};
use nifreeze::outliers::OutlierConfig;
use nifreeze::registration::RegistrationConfig;
use nifreeze::Error;

impl TryFrom<&EstimateArgs> for EstimateConfig {
    type Error = Error;

    fn try_from(args: &EstimateArgs) -> Result<Self, Error> {
        let target = match args.model {
            ModelChoice::Dti => Target::Model(ModelKind::Dti),
            ModelChoice::Dki => Target::Model(ModelKind::Dki),
            ModelChoice::B0 => Target::B0,
        };
        // Measured defaults (README, "How estimate works"): a second DTI pass loses accuracy
        // on multi-shell data, a second DKI pass gains a little. The same holds with the
        // eddy-current model since its bootstrap searches the eddy family (the first pass no
        // longer fits data still distorted; it once needed two DTI passes). `estimate
        // --transform eddy --model dti -j 2`, median / worst mm, 2 passes → 1 (benches/README.md,
        // seventh session): bench 0.0239 / 0.0682 → 0.0226 / 0.0561, bench_artefacts
        // 0.0263 / 0.0863 → 0.0270 / 0.0879, own `--ec 1` seeds 21–25 and two with dropouts and
        // drift all better (seed 23 0.0613 / 0.1281 → 0.0515 / 0.1038); DKI keeps two (bench_artefacts
        // 0.0252 / 0.0915 with two, 0.0290 / 0.0923 with one).
        let passes = args.passes.unwrap_or(match target {
            Target::Model(ModelKind::Dki) => 2,
            _ => 1,
        });
        if passes == 0 {
            return Err(Error::input(
                "--passes must be at least 1 (each pass refits the model and re-registers every volume)",
            ));
        }
        if target == Target::B0 && args.transform != TransformChoice::Rigid {
            return Err(Error::input(
                "--model b0 registers by mutual information, which is rigid only: use --transform rigid, \
                 or --model dti|dki for affine or eddy transforms",
            ));
        }
        let z = args.outlier_threshold.abs();
        if !(z > 0.0 && z.is_finite()) {
            return Err(Error::input(format!(
                "--outlier-threshold {} must be a non-zero number of standard deviations (eddy's default is 4)",
                args.outlier_threshold
            )));
        }
        Ok(EstimateConfig {
            target,
            fit_method: match args.fit_method {
                FitMethodChoice::Wls => FitMethod::Wls,
                FitMethodChoice::Ols => FitMethod::Ols,
            },
            fold_fit: match args.folds {
                FoldsChoice::Downdate => FoldFit::Downdate,
                FoldsChoice::Refit => FoldFit::Refit,
            },
            registration: match args.transform {
                TransformChoice::Rigid => RegistrationConfig::rigid(),
                TransformChoice::Affine => RegistrationConfig::affine(),
                // the phase-encode axis in scanner space needs the series' grid: the command
                // sets it once the series is read (registration refuses a non-finite axis)
                TransformChoice::Eddy => RegistrationConfig::eddy([f64::NAN; 3]),
            },
            order: match args.order {
                OrderChoice::Linear => Order::Linear,
                OrderChoice::Random => Order::Random,
                OrderChoice::Bvalue => Order::Bvalue,
                OrderChoice::Centralsym => Order::Centralsym,
            },
            passes,
            seed: args.seed,
            b0_threshold: args.gradients.b0_threshold,
            ignore_b0: args.gradients.ignore_b0,
            // slice axis and slice size are completed from the series (see `estimate::run`)
            outliers: Some(OutlierConfig {
                threshold: z,
                ..OutlierConfig::for_grid([2.0; 3], 2)
            }),
            drift_correct: args.drift_correct,
        })
    }
}
