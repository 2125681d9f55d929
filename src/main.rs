fn main() {
    println!("webrep");
}
