// Options for the bundler `switchyard policy build` runs (jco componentize --bundle): the
// contract's imports (`switchyard:policy/host@0.4.0`) are the component's, not files.
export default { external: [/^switchyard:/] };
