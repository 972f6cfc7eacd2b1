//! Whether this process was started by a parallel launcher, and as which of how many processes:
//! read from the environment the launchers set, so that a build without MPI can refuse to train
//! alone in each of N processes.

/// A launch of several processes, as the environment describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Launch {
    /// The launcher, in words (`Open MPI`, `PMI`, `Slurm`).
    pub launcher: &'static str,
    /// The variables that say so, as `NAME=VALUE`.
    pub evidence: String,
    pub size: usize,
    pub rank: usize,
}

/// The launch that the environment `var` describes, if any: Open MPI's `mpirun`
/// (`OMPI_COMM_WORLD_SIZE`, `OMPI_COMM_WORLD_RANK`), a PMI launcher (`PMI_SIZE`, `PMI_RANK`:
/// MPICH's Hydra, Intel MPI, `srun --mpi=pmi2`), and Slurm's `srun` (`SLURM_NTASKS` with
/// `SLURM_PROCID`, also under `--mpi=pmix`, whose own `PMIX_RANK` carries no size). A value that
/// is not a number is ignored.
pub fn detect(var: impl Fn(&str) -> Option<String>) -> Option<Launch> {
    let number = |name: &str| var(name).and_then(|v| v.trim().parse::<usize>().ok());
    let launchers: [(&'static str, &str, &str); 3] =
        [("Open MPI", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK"), ("PMI", "PMI_SIZE", "PMI_RANK"), ("Slurm", "SLURM_NTASKS", "SLURM_PROCID")];
    launchers.into_iter().find_map(|(launcher, size_var, rank_var)| {
        let (size, rank) = (number(size_var)?, number(rank_var)?);
        Some(Launch { launcher, evidence: format!("{size_var}={size}, {rank_var}={rank}"), size, rank })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn detect_in(vars: &[(&str, &str)]) -> Option<Launch> {
        let env: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        detect(|name| env.get(name).cloned())
    }

    #[test]
    fn each_launcher_is_recognised_by_its_variables() {
        let ompi = detect_in(&[("OMPI_COMM_WORLD_SIZE", "4"), ("OMPI_COMM_WORLD_RANK", "3"), ("OMPI_COMM_WORLD_LOCAL_RANK", "1")]).expect("Open MPI");
        assert_eq!((ompi.launcher, ompi.size, ompi.rank), ("Open MPI", 4, 3));
        assert_eq!(ompi.evidence, "OMPI_COMM_WORLD_SIZE=4, OMPI_COMM_WORLD_RANK=3");
        let pmi = detect_in(&[("PMI_SIZE", "2"), ("PMI_RANK", "0")]).expect("PMI");
        assert_eq!((pmi.launcher, pmi.size, pmi.rank), ("PMI", 2, 0));
        let slurm = detect_in(&[("SLURM_NTASKS", "64"), ("SLURM_PROCID", "17"), ("PMIX_RANK", "17")]).expect("Slurm");
        assert_eq!((slurm.launcher, slurm.size, slurm.rank), ("Slurm", 64, 17));
    }

    #[test]
    fn no_launcher_or_half_a_description_is_no_launch() {
        assert_eq!(detect_in(&[]), None);
        assert_eq!(detect_in(&[("HOME", "/root")]), None);
        // A Slurm allocation without a task id.
        assert_eq!(detect_in(&[("SLURM_NTASKS", "4"), ("SLURM_JOB_ID", "1")]), None);
        assert_eq!(detect_in(&[("OMPI_COMM_WORLD_SIZE", "two"), ("OMPI_COMM_WORLD_RANK", "0")]), None);
    }

    #[test]
    fn mpirun_wins_over_the_slurm_allocation_it_runs_in() {
        let l = detect_in(&[("SLURM_NTASKS", "1"), ("SLURM_PROCID", "0"), ("OMPI_COMM_WORLD_SIZE", "2"), ("OMPI_COMM_WORLD_RANK", "1")]).expect("launch");
        assert_eq!((l.launcher, l.size, l.rank), ("Open MPI", 2, 1));
    }
}
