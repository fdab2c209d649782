//! Generates the cm.v1 and CRI (runtime.v1) gRPC code from proto/ with the protoc shipped in protoc-bin-vendored, so a fresh
//! machine needs no system protoc. Also writes the file descriptor set that server reflection serves.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; prost-build reads PROTOC from the environment.
    unsafe { std::env::set_var("PROTOC", protoc) };
    let include = protoc_bin_vendored::include_path()?;
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure().file_descriptor_set_path(out_dir.join("cm_v1_descriptor.bin")).compile_protos(
        &[std::path::PathBuf::from("proto/cm/v1/cm.proto")],
        &[std::path::PathBuf::from("proto"), include],
    )?;
    // Kubernetes' CRI v1 (k8s.io/cri-api v0.37.2's api.proto, unchanged): the kubelet's runtime and image
    // services, served by cm-server --cri-listen.
    tonic_prost_build::configure().file_descriptor_set_path(out_dir.join("cri_v1_descriptor.bin")).compile_protos(
        &[std::path::PathBuf::from("proto/k8s/cri/v1/api.proto")],
        &[std::path::PathBuf::from("proto"), std::path::PathBuf::from("proto/k8s/cri/v1")],
    )?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
