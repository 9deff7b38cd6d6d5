cd /work/main
P=.venv/bin/python
set -x
$P scripts/evaluate.py --protocol=ghosting --data=outputs/synth_ghost --ghost_variants=prior,uniform,fit --ghost_masks=leak --json=outputs/fgate2/ghost_leak.json --figure=outputs/fgate2/ghost_leak.png
echo "ghost rc=$?"
$P scripts/eval_clean_albedo.py --num_images 40 --label "feature gate 19 (brows), images 0-39" --json outputs/fgate2/clean40.json
echo "clean rc=$?"
$P scripts/make_refinement_samples.py --input='outputs/real_recipe/faces/test-*.tfrecord' --out outputs/fgate2/real_test_samples --prior=fit --uv_size=128 --fit_steps=300 --batch_size=8 --num_shards=2 --limit=96 --noprogress
$P scripts/evaluate.py --data='outputs/fgate2/real_test_samples/samples-*.tfrecord' --variants=fit --identity=none --fit_steps=150 --batch_size=8 --json=outputs/fgate2/real_fit.json --figure=
echo "real rc=$?"
$P scripts/evaluate.py --protocol=images --data=outputs/synth_hard --batch_size=4 --json=outputs/fgate2/hard_images.json "--title=hard light, appearance gate 6, brows 19"
echo "hard rc=$?"
$P scripts/make_refinement_samples.py --input 'outputs/synth_eval/tfrecords/*.tfrecord' --out outputs/fgate2/synth_eval_samples --num_shards 1 --noprogress
$P scripts/evaluate.py --data='outputs/fgate2/synth_eval_samples/*.tfrecord' --synthetic_dir=outputs/synth_eval --variants=fit --identity=none --json=outputs/fgate2/synth_fit.json --figure=
echo "synth rc=$?"
$P scripts/evaluate.py --protocol=images --data=outputs/synth_eval --batch_size=4 --json=outputs/fgate2/synth_images.json "--title=Synthetic faces (seed 777) from the image files, feature gate 19 (brows)"
echo "synthimg rc=$?"
