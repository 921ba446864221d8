fn main() {
    print!("{}", cbo::api::crds_yaml().unwrap());
}
