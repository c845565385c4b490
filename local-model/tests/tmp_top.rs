use slmgate_local_model::generator::{ChatMessage, Generator, GeneratorOptions};
use slmgate_local_model::models::Quantize;
#[test]
fn top() {
    let mut opts = GeneratorOptions::new("../models/SmolLM2-135M-Instruct.Q4_1.gguf");
    opts.quantize = Quantize::Keep;
    let g = Generator::load(&opts).unwrap();
    let mut m = g.instance().unwrap();
    let p = g
        .prompt_tokens(&[ChatMessage::new("user", "What is the capital of France?")])
        .unwrap();
    let mut l = m.forward(&p, 0).unwrap();
    let forced = [60u32, 23, 39614, 1141, 552, 28, 2618, 12693, 2756, 28];
    for step in 0..10 {
        let mut idx: Vec<usize> = (0..l.len()).collect();
        idx.sort_by(|a, b| l[*b].total_cmp(&l[*a]));
        println!(
            "{step} {:?}",
            idx[..3].iter().map(|&i| (i, l[i])).collect::<Vec<_>>()
        );
        l = m.forward(&[forced[step]], p.len() + step).unwrap();
    }
}
