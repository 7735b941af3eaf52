"""The science, with no database access: potentials, relaxation, references and hulls, validity,
channels, insertion, band gaps, criteria."""
