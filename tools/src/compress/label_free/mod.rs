//! Label-free compression: the dense model is the teacher, and every decision (bits per layer,
//! how far to go) is measured by how well the compressed model agrees with it on unlabelled
//! photos — top-1 agreement, the teacher's top-1 inside the student's top-5, and the KL
//! divergence of the softmax outputs.
//!
//! The photos are stretched with augmentation (random crops of varying scale and aspect, mirror
//! images): a wallpaper of 2560×1600 pixels holds many different 224-pixel views. Candidate
//! models run in the core runtime (tract), exactly as the phone will run the file.
//!
//! The stages, each in its module: [`photos`] (folders and views), [`agreement`] (the metrics),
//! [`student`] (models with some weights replaced), [`quantizer`] (how a layer is shared),
//! [`bit_curves`] (each layer alone along the quantizer ladder), [`gptq_statistics`] (what
//! error-compensated rounding needs), [`reround`] (asymmetric re-rounding), [`allocation`]
//! (bits across layers), [`distillation`] (centroid fine-tuning without labels), and
//! [`curve_cache`] and [`statistics_cache`] (curves and GPTQ statistics kept between runs);
//! [`super::label_free_pipeline`] runs them in order.

pub mod agreement;
pub mod allocation;
pub mod bit_curves;
pub mod curve_cache;
pub mod distillation;
pub mod fingerprint;
pub mod gptq_statistics;
pub mod photos;
pub mod quantizer;
pub mod reround;
pub mod statistics_cache;
pub mod student;
