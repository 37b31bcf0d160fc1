#!/bin/bash
# Train the dog-breed classifier once on this Deep Learning AMI instance, upload the model, power off.
# The instance terminates on shutdown, so a finished (or failed) run never leaves a GPU billing.
set -euo pipefail

REGION="__REGION__"
BUCKET="__BUCKET__"
CODE_URI="__CODE_URI__"
RUN_ID="__RUN_ID__"
DESTINATION="s3://${BUCKET}/__EC2_MODELS_PREFIX__${RUN_ID}"
WORK=/opt/dogbreeds
LOG=/var/log/dogbreeds-training.log

finish() {
  status=$?
  echo "training finished with exit status ${status}"
  aws s3 cp "${LOG}" "${DESTINATION}/train.log" --region "${REGION}" --only-show-errors || true
  shutdown -h now
}
trap finish EXIT
exec > >(tee -a "${LOG}") 2>&1

mkdir -p "${WORK}"/{code,data,model,output,pretrained,checkpoints}
aws s3 cp "${CODE_URI}" "${WORK}/code.tar.gz" --region "${REGION}" --only-show-errors
tar -xzf "${WORK}/code.tar.gz" -C "${WORK}/code"
aws s3 sync "s3://${BUCKET}/__DATASETS_PREFIX__" "${WORK}/data" --region "${REGION}" --only-show-errors
aws s3 sync "s3://${BUCKET}/__PRETRAINED_PREFIX__" "${WORK}/pretrained" --region "${REGION}" --only-show-errors

# The Deep Learning AMI's PyTorch environment.
source /opt/pytorch/bin/activate
pretrained=download
if compgen -G "${WORK}/pretrained/__BACKBONE__*.pth" > /dev/null; then
  pretrained="${WORK}/pretrained"
fi
python "${WORK}/code/train.py" \
  --data-dir "${WORK}/data" --model-dir "${WORK}/model" --output-dir "${WORK}/output" \
  --checkpoint-dir "${WORK}/checkpoints" --pretrained "${pretrained}" \
  __HYPERPARAMETERS__

tar -czf "${WORK}/model.tar.gz" -C "${WORK}/model" .
aws s3 cp "${WORK}/model.tar.gz" "${DESTINATION}/model.tar.gz" --region "${REGION}" --only-show-errors
aws s3 cp "${WORK}/output" "${DESTINATION}/output" --recursive --region "${REGION}" --only-show-errors
echo "model uploaded to ${DESTINATION}/model.tar.gz"
