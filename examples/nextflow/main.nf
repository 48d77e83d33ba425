#!/usr/bin/env nextflow
// Head-motion estimation with nifreeze-rs, one task per subject of a BIDS-like folder
// (sub-*/dwi/sub-*_dwi.nii.gz with .bval/.bvec sidecars).
//
//   nextflow run examples/nextflow/main.nf --bids /data/bids --outdir /data/derivatives/nifreeze-rs

nextflow.enable.dsl = 2

params.bids     = 'bids'
params.outdir   = 'derivatives/nifreeze-rs'
params.nifreeze = 'nifreeze-rs'   // name on PATH, or a full path
params.args     = ''              // extra estimate options, e.g. '--model dki'

process ESTIMATE {
    tag "sub-${subject}"
    publishDir params.outdir, mode: 'copy'

    input:
    tuple val(subject), path(dwi), path(bval), path(bvec)

    output:
    tuple val(subject), path("sub-${subject}"), emit: results

    script:
    """
    ${params.nifreeze} estimate ${dwi} --bval ${bval} --bvec ${bvec} \\
        -j ${task.cpus} ${params.args} --out sub-${subject}
    """
}

workflow {
    subjects = Channel
        .fromPath("${params.bids}/sub-*/dwi/sub-*_dwi.nii.gz", checkIfExists: true)
        .map { dwi ->
            def subject = dwi.name - ~/^sub-/ - ~/_dwi\.nii\.gz$/
            def stem = dwi.toString() - ~/\.nii\.gz$/
            tuple(subject, dwi, file("${stem}.bval", checkIfExists: true), file("${stem}.bvec", checkIfExists: true))
        }

    ESTIMATE(subjects)
}
